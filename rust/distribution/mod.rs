//! The Erlang distribution protocol: epmd, the handshake, and connections.
//!
//! This layer knows nothing of processes: a connection reports typed
//! [`connection::Event`]s to whoever implements [`connection::Events`] (the
//! node), and takes the node's outgoing messages through an
//! [`connection::Outbox`].

pub mod accept;
pub mod connection;
pub mod epmd;
pub mod flags;
pub mod handshake;
pub mod message;

use erl_dist::DistributionFlags;

/// The flags portnode offers a peer ([`flags::OFFERED`]), as erl_dist's type.
pub fn flags() -> DistributionFlags {
    DistributionFlags::from_bits_truncate(flags::OFFERED)
}

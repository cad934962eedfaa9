//! The Erlang distribution protocol: epmd, the handshake, and connections.
//!
//! This layer knows nothing of processes: a connection reports typed
//! [`connection::Event`]s to whoever implements [`connection::Events`] (the
//! node), and takes the node's outgoing messages through an
//! [`connection::Outbox`].

pub mod accept;
pub mod connection;
pub mod epmd;
pub mod handshake;
pub mod message;

use erl_dist::DistributionFlags;

/// The flags portnode offers a peer. Hidden (no PUBLISHED); no atom cache and
/// no fragments, which it does not implement; monitors by pid and by name,
/// so that OTP does not quietly keep monitors local.
pub fn flags() -> DistributionFlags {
    DistributionFlags::mandatory()
        | DistributionFlags::DIST_MONITOR
        | DistributionFlags::DIST_MONITOR_NAME
        | DistributionFlags::EXIT_PAYLOAD
        | DistributionFlags::SEND_SENDER
        | DistributionFlags::SPAWN
}

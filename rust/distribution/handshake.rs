//! The distribution handshake, both ways, with a deadline, on tokio streams.
//!
//! The dialing side runs erl_dist's handshake through `tokio_util::compat`
//! and hands the plain `TcpStream` back; the accepting side is
//! [`super::accept`], which handles `alive` as OTP does.

use super::accept::{self, Admit, Pending};
use super::flags;
use erl_dist::handshake::{ClientSideHandshake, HandshakeError, HandshakeStatus};
use erl_dist::node::{Creation, LocalNode, NodeName};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::compat::TokioAsyncReadCompatExt;

/// How long a peer may take to complete the handshake (OTP's net_setuptime is 7 s).
const DEADLINE: Duration = Duration::from_secs(7);

/// The peer on the other end of a completed handshake.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub name: String,
    pub creation: u32,
    /// The distribution flags the peer offered.
    pub flags: u64,
}

/// Why a handshake failed. Never carries the cookie.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeFailure {
    #[error("handshake timed out after {0:?}")]
    Timeout(Duration),
    #[error("wrong cookie")]
    WrongCookie,
    #[error("peer asked for a dynamic name, which this node does not grant")]
    DynamicName,
    #[error("peer {0} still has a connection to this node; will retry")]
    AlreadyConnected(String),
    #[error("another handshake with {0} is under way")]
    Duplicate(String),
    #[error("malformed handshake message: {0}")]
    Malformed(&'static str),
    #[error("{0}")]
    Protocol(HandshakeError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<HandshakeError> for HandshakeFailure {
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::CookieMismatch => HandshakeFailure::WrongCookie,
            other => HandshakeFailure::Protocol(other),
        }
    }
}

fn local_node(name: &NodeName, creation: u32) -> LocalNode {
    let mut local = LocalNode::new(name.clone(), Creation::new(creation));
    local.flags = flags();
    local
}

async fn with_deadline<T>(fut: impl Future<Output = Result<T, HandshakeFailure>>) -> Result<T, HandshakeFailure> {
    tokio::time::timeout(DEADLINE, fut).await.map_err(|_| HandshakeFailure::Timeout(DEADLINE))?
}

/// Answers a handshake from a peer that connected to us. `admit` says
/// whether a connection to the peer's name is already up (see [`accept::Admission`]).
pub async fn accept(
    mut stream: TcpStream,
    name: &NodeName,
    creation: u32,
    cookie: &str,
    admit: &dyn Admit,
    pending: &Pending,
) -> Result<(TcpStream, PeerInfo), HandshakeFailure> {
    with_deadline(async {
        let full = name.to_string();
        let me = accept::Me { name: &full, creation, flags: flags(), cookie };
        let info = accept::accept_on(&mut stream, &me, admit, pending).await?;
        Ok((stream, info))
    })
    .await
}

/// Dials `peer` (already resolved to `addr`) and runs the client side of the handshake.
pub async fn dial(addr: (String, u16), name: &NodeName, creation: u32, cookie: &str) -> Result<(TcpStream, PeerInfo), HandshakeFailure> {
    with_deadline(async {
        let stream = TcpStream::connect((addr.0.as_str(), addr.1)).await?;
        stream.set_nodelay(true)?;
        let mut hs = ClientSideHandshake::new(stream.compat(), local_node(name, creation), cookie);
        let status = hs.execute_send_name(erl_dist::LOWEST_DISTRIBUTION_PROTOCOL_VERSION).await?;
        if status == HandshakeStatus::Alive {
            // erl_dist's answer to `alive` stalls the peer; back off and redial instead.
            return Err(HandshakeFailure::AlreadyConnected(addr.0));
        }
        let (stream, peer) = hs.execute_rest(true).await?;
        let info = PeerInfo {
            name: peer.name.to_string(),
            creation: peer.creation.map(|c| c.get()).unwrap_or(0),
            flags: peer.flags.bits(),
        };
        Ok((stream.into_inner(), info))
    })
    .await
}

//! Registration with epmd, started first if none runs (as `erl` does).

use erl_dist::epmd::{EpmdClient, NodeEntry, DEFAULT_EPMD_PORT};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::compat::TokioAsyncReadCompatExt;
use tracing::info;

/// Errors while registering with epmd.
#[derive(Debug, thiserror::Error)]
pub enum EpmdError {
    #[error("cannot reach epmd on port {port} and could not start it: {source}")]
    Unreachable { port: u16, source: std::io::Error },
    #[error("epmd refused the registration of {name:?} (is a node of that name running?): {detail}")]
    Refused { name: String, detail: String },
}

/// The live registration: the node stays registered while this is held.
pub struct Registration {
    _socket: TcpStream,
    pub creation: u32,
}

fn epmd_port() -> u16 {
    std::env::var("ERL_EPMD_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(DEFAULT_EPMD_PORT)
}

/// Connects to the local epmd, starting `epmd -daemon` if nothing listens.
async fn connect() -> Result<TcpStream, EpmdError> {
    let port = epmd_port();
    if let Ok(s) = TcpStream::connect(("127.0.0.1", port)).await {
        return Ok(s);
    }
    info!(port, "epmd is not running; starting it");
    let status = tokio::process::Command::new("epmd").arg("-daemon").status().await;
    if let Err(source) = status {
        return Err(EpmdError::Unreachable { port, source });
    }
    let mut last = None;
    for _ in 0..50 {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let source = last.unwrap_or_else(|| std::io::Error::other("epmd did not come up"));
    Err(EpmdError::Unreachable { port, source })
}

/// Registers `alive` (the part of the name before `@`) as a hidden node listening on `port`.
pub async fn register(alive: &str, port: u16) -> Result<Registration, EpmdError> {
    let stream = connect().await?;
    let entry = NodeEntry::new_hidden(alive, port);
    let refused = |e: erl_dist::epmd::EpmdError| EpmdError::Refused { name: alive.to_owned(), detail: e.to_string() };
    let (socket, creation) = EpmdClient::new(stream.compat()).register(entry).await.map_err(refused)?;
    Ok(Registration { _socket: socket.into_inner(), creation: creation.get() })
}

/// Looks up the distribution port of `alive` on `host`.
pub async fn lookup(alive: &str, host: &str) -> std::io::Result<Option<u16>> {
    let stream = TcpStream::connect((host, epmd_port())).await?;
    let entry = EpmdClient::new(stream.compat()).get_node(alive).await.map_err(std::io::Error::other)?;
    Ok(entry.map(|e| e.port))
}

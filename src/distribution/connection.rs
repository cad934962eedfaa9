//! One established connection to a peer node: framing, ticks and dispatch.
//!
//! The reader decodes frames and hands them to the node; the writer batches
//! whatever is queued into one write, ticks when idle and echoes the
//! peer's ticks. The connection ends when either half fails, the peer goes
//! silent for the tick timeout, or the node drops it.

use super::handshake::PeerInfo;
use super::message::Control;
use crate::node::{Node, Peer};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, Notify};
use tracing::{info, warn};

/// Limits and timers of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Like the kernel's `net_ticktime`: a peer silent this long is dropped,
    /// and this node ticks every quarter of it when idle.
    pub net_ticktime: Duration,
    /// Largest frame accepted from a peer.
    pub max_frame: usize,
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionEnd {
    #[error("peer silent for {0:?} (tick timeout)")]
    TickTimeout(Duration),
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    FrameTooLarge { size: usize, limit: usize },
    #[error("closed by this node")]
    Dropped,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Runs the connection until it ends, then fires its links and monitors.
pub async fn serve(stream: TcpStream, peer: PeerInfo, node: Arc<Node>, settings: Settings) {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    let echo = Arc::new(Notify::new());
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let queued = Arc::new(AtomicUsize::new(0));
    drop(node.peer_up(&peer.name, Peer { id, tx, queued: queued.clone() }));
    info!(peer = %peer.name, creation = peer.creation, "node connected");
    let end = tokio::select! {
        e = read_loop(rd, &peer.name, &node, settings, &echo) => e,
        e = write_loop(wr, rx, settings, &echo, &queued) => e,
    };
    node.peer_down(&peer.name, id);
    match end {
        ConnectionEnd::Dropped => info!(peer = %peer.name, "connection closed"),
        ConnectionEnd::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            info!(peer = %peer.name, "node disconnected")
        }
        other => warn!(peer = %peer.name, reason = %other, "connection dropped"),
    }
}

async fn read_loop(rd: OwnedReadHalf, peer: &str, node: &Node, settings: Settings, echo: &Notify) -> ConnectionEnd {
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let mut frame = Vec::new();
    loop {
        let len = match tokio::time::timeout(settings.net_ticktime, rd.read_u32()).await {
            Err(_) => return ConnectionEnd::TickTimeout(settings.net_ticktime),
            Ok(Err(e)) => return e.into(),
            Ok(Ok(len)) => len as usize,
        };
        if len == 0 {
            echo.notify_one();
            continue;
        }
        if len > settings.max_frame {
            return ConnectionEnd::FrameTooLarge { size: len, limit: settings.max_frame };
        }
        frame.resize(len, 0);
        if let Err(e) = rd.read_exact(&mut frame).await {
            return e.into();
        }
        match Control::decode(&frame) {
            Ok(control) => node.incoming(peer, control),
            // One bad message costs only itself: the stream is still in step.
            Err(e) => warn!(peer, error = %e, bytes = len, "dropped a message this node cannot decode"),
        }
        if frame.capacity() > 1 << 20 {
            frame = Vec::new();
        }
    }
}

async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Control>,
    settings: Settings,
    echo: &Notify,
    queued: &AtomicUsize,
) -> ConnectionEnd {
    let mut ticks = tokio::time::interval(settings.net_ticktime / 4);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut wrote_since_tick = false;
    loop {
        buf.clear();
        tokio::select! {
            biased;
            msg = rx.recv() => match msg {
                Some(control) => {
                    control.encode_into(&mut buf);
                    let mut taken = 1;
                    while buf.len() < 256 * 1024 {
                        match rx.try_recv() {
                            Ok(control) => {
                                control.encode_into(&mut buf);
                                taken += 1;
                            }
                            Err(_) => break,
                        }
                    }
                    queued.fetch_sub(taken, Ordering::Relaxed);
                }
                None => return ConnectionEnd::Dropped,
            },
            _ = echo.notified() => buf.extend_from_slice(&[0, 0, 0, 0]),
            // Tick only when nothing else went out in the last quarter tick time.
            _ = ticks.tick() => {
                if std::mem::take(&mut wrote_since_tick) {
                    continue;
                }
                buf.extend_from_slice(&[0, 0, 0, 0]);
            }
        }
        if let Err(e) = wr.write_all(&buf).await {
            return e.into();
        }
        wrote_since_tick = true;
        if buf.capacity() > 4 << 20 {
            buf = Vec::with_capacity(64 * 1024);
        }
    }
}

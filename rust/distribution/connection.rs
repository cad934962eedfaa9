//! One established connection to a peer node: framing, ticks, and the
//! events it gives the node.
//!
//! The reader decodes frames and hands them to the node as [`Event`]s; the
//! writer batches whatever the node queued in the [`Outbox`] into one write,
//! ticks when idle and echoes the peer's ticks. The connection ends when
//! either half fails, the peer goes silent for the tick timeout (in a frame's
//! length or in its body alike), or the node drops the outbox.

use super::handshake::PeerInfo;
use super::message::Control;
use crate::backlog::Backlog;
use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
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
    #[error("peer stalled for {timeout:?} in a frame of {size} bytes, {got} received (tick timeout)")]
    FrameStalled { timeout: Duration, size: usize, got: usize },
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    FrameTooLarge { size: usize, limit: usize },
    #[error("closed by this node")]
    Dropped,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One connection, as the node tells it from an older or newer one to the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(u64);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A connection with this many bytes waiting to be written is busy (the
/// default limit of a busy distribution port, 1 MiB); it is not busy again
/// once half of it is written.
pub const BUSY_BYTES: usize = 1 << 20;

/// What the writer is handed: a control message to encode, or frames
/// encoded already (by a port, straight from its program's output).
pub enum Outgoing {
    Control(Control),
    /// Whole frames, each with its 4-byte length.
    Frames(Vec<u8>),
    /// One frame in two pieces, written with one `writev` and never copied:
    /// its length, control and message up to a binary's length field, then
    /// the binary's bytes.
    Split { head: Vec<u8>, payload: Vec<u8> },
}

impl Outgoing {
    fn len(&self) -> usize {
        match self {
            Outgoing::Control(c) => c.weight(),
            Outgoing::Frames(b) => b.len(),
            Outgoing::Split { head, payload } => head.len() + payload.len(),
        }
    }
}

/// Where the node queues a connection's outgoing messages. Dropping every
/// clone closes the connection.
#[derive(Clone)]
pub struct Outbox {
    /// Each message with its weight (its encoded size in bytes, or close to it).
    tx: mpsc::UnboundedSender<(Outgoing, usize)>,
    backlog: Arc<Backlog>,
}

impl Outbox {
    /// Queues `control` for the writer; false if the connection has ended.
    pub fn send(&self, control: Control) -> bool {
        self.send_outgoing(Outgoing::Control(control))
    }

    /// Queues frames encoded already; false if the connection has ended.
    pub fn send_outgoing(&self, out: Outgoing) -> bool {
        let weight = out.len();
        // Counted before the writer can take it, so the count never goes below zero.
        self.backlog.add(weight);
        let sent = self.tx.send((out, weight)).is_ok();
        if !sent {
            self.backlog.take(weight);
        }
        sent
    }

    /// Bytes queued and not yet written, with the busy mark and a wake-up.
    pub fn backlog(&self) -> &Arc<Backlog> {
        &self.backlog
    }
}

/// What a connection tells the node, in this order: one `Up`, any number
/// of `Message`s, one `Down`.
pub enum Event<'a> {
    /// The handshake is done; before this returns, nothing is read.
    Up { conn: ConnId, peer: &'a PeerInfo, outbox: Outbox },
    Message { conn: ConnId, peer: &'a str, control: Control },
    Down { conn: ConnId, peer: &'a str },
}

/// The consumer of connection events: the node.
pub trait Events: Send + Sync {
    fn event(&self, event: Event<'_>);
}

/// Runs the connection until it ends. `events` hears of it from `Up` to `Down`.
pub async fn serve(stream: TcpStream, peer: PeerInfo, events: Arc<dyn Events>, settings: Settings) {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    let echo = Arc::new(Notify::new());
    let conn = ConnId(NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let backlog = Arc::new(Backlog::new(BUSY_BYTES, BUSY_BYTES / 2));
    events.event(Event::Up { conn, peer: &peer, outbox: Outbox { tx, backlog: backlog.clone() } });
    info!(peer = %peer.name, creation = peer.creation, "node connected");
    let end = tokio::select! {
        e = read_loop(rd, conn, &peer.name, &*events, settings, &echo) => e,
        e = write_loop(wr, rx, settings, &echo, &backlog) => e,
    };
    events.event(Event::Down { conn, peer: &peer.name });
    match end {
        ConnectionEnd::Dropped => info!(peer = %peer.name, "connection closed"),
        ConnectionEnd::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            info!(peer = %peer.name, "node disconnected")
        }
        other => warn!(peer = %peer.name, reason = %other, "connection dropped"),
    }
}

/// The most read into a frame at once. The buffer grows (by doubling) as
/// bytes arrive: a stalled peer pins about twice what it sent, not the frame's length.
const BODY_CHUNK: usize = 256 * 1024;

/// Reads one frame into `frame`. `Ok(None)` is a tick. Every read has the
/// tick deadline, so a peer that stops in the middle of a frame is dropped
/// as one that stops between frames is.
pub async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    frame: &mut Vec<u8>,
    settings: Settings,
) -> Result<Option<usize>, ConnectionEnd> {
    let deadline = settings.net_ticktime;
    let len = match tokio::time::timeout(deadline, rd.read_u32()).await {
        Err(_) => return Err(ConnectionEnd::TickTimeout(deadline)),
        Ok(len) => len? as usize,
    };
    if len == 0 {
        return Ok(None);
    }
    if len > settings.max_frame {
        return Err(ConnectionEnd::FrameTooLarge { size: len, limit: settings.max_frame });
    }
    frame.clear();
    while frame.len() < len {
        let want = (len - frame.len()).min(BODY_CHUNK);
        frame.reserve(want);
        let read = tokio::time::timeout(deadline, (&mut *rd).take(want as u64).read_buf(frame)).await;
        match read {
            Err(_) => return Err(ConnectionEnd::FrameStalled { timeout: deadline, size: len, got: frame.len() }),
            Ok(Ok(0)) => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
        }
    }
    Ok(Some(len))
}

async fn read_loop(
    rd: OwnedReadHalf,
    conn: ConnId,
    peer: &str,
    events: &dyn Events,
    settings: Settings,
    echo: &Notify,
) -> ConnectionEnd {
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let mut frame = Vec::new();
    loop {
        let len = match read_frame(&mut rd, &mut frame, settings).await {
            Err(end) => return end,
            Ok(None) => {
                echo.notify_one();
                continue;
            }
            Ok(Some(len)) => len,
        };
        match Control::decode(&frame) {
            Ok(control) => events.event(Event::Message { conn, peer, control }),
            // One bad message costs only itself: the stream is still in step.
            Err(e) => warn!(peer, error = %e, bytes = len, "dropped a message this node cannot decode"),
        }
        if frame.capacity() > 1 << 20 {
            frame = Vec::new();
        }
    }
}

/// The most bytes gathered into one write, and the most pieces.
const WRITE_BATCH: usize = 256 * 1024;
const WRITE_PIECES: usize = 64;

/// What one write sends: small messages encoded into one buffer, and the
/// payloads of split frames as pieces of their own, in order.
struct Batch {
    buf: Vec<u8>,
    /// Each piece: a range of `buf`, or an owned payload.
    pieces: Vec<Piece>,
    bytes: usize,
}

enum Piece {
    Buf(usize, usize),
    Owned(Vec<u8>),
}

impl Batch {
    fn clear(&mut self) {
        self.buf.clear();
        self.pieces.clear();
        self.bytes = 0;
        if self.buf.capacity() > 4 << 20 {
            self.buf = Vec::with_capacity(64 * 1024);
        }
    }

    fn full(&self) -> bool {
        self.bytes >= WRITE_BATCH || self.pieces.len() + 2 > WRITE_PIECES
    }

    /// Appends to `buf`, extending the last piece when it is `buf`'s tail.
    fn extend_buf(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        f(&mut self.buf);
        let end = self.buf.len();
        self.bytes += end - start;
        match self.pieces.last_mut() {
            Some(Piece::Buf(_, e)) if *e == start => *e = end,
            _ => self.pieces.push(Piece::Buf(start, end)),
        }
    }

    fn push(&mut self, out: Outgoing) {
        match out {
            Outgoing::Control(control) => self.extend_buf(|b| {
                // Nothing of it is written then: the stream stays in step.
                if let Err(e) = control.encode_into(b) {
                    warn!(error = %e, "dropped a message this node cannot encode");
                }
            }),
            Outgoing::Frames(frames) if frames.len() < 16 * 1024 => self.extend_buf(|b| b.extend_from_slice(&frames)),
            Outgoing::Frames(frames) => {
                self.bytes += frames.len();
                self.pieces.push(Piece::Owned(frames));
            }
            Outgoing::Split { head, payload } => {
                self.extend_buf(|b| b.extend_from_slice(&head));
                self.bytes += payload.len();
                self.pieces.push(Piece::Owned(payload));
            }
        }
    }

    fn slice<'a>(&'a self, piece: &'a Piece) -> &'a [u8] {
        match piece {
            Piece::Buf(s, e) => &self.buf[*s..*e],
            Piece::Owned(v) => v,
        }
    }

    /// Writes every piece, with as few `writev`s as the socket allows, and
    /// takes what each one wrote off `backlog` (up to `weight` in all, the
    /// rest once all is written): producers see room as soon as it is made.
    async fn write_to(&self, wr: &mut OwnedWriteHalf, backlog: &Backlog, mut weight: usize) -> std::io::Result<()> {
        let (mut first, mut offset) = (0, 0);
        while first < self.pieces.len() {
            let slices: Vec<IoSlice<'_>> = self.pieces[first..]
                .iter()
                .enumerate()
                .map(|(i, p)| IoSlice::new(if i == 0 { &self.slice(p)[offset..] } else { self.slice(p) }))
                .collect();
            let mut n = wr.write_vectored(&slices).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            let written = n.min(weight);
            backlog.take(written);
            weight -= written;
            while n > 0 {
                let left = self.slice(&self.pieces[first]).len() - offset;
                if n >= left {
                    n -= left;
                    first += 1;
                    offset = 0;
                } else {
                    offset += n;
                    n = 0;
                }
            }
        }
        backlog.take(weight);
        Ok(())
    }
}

async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<(Outgoing, usize)>,
    settings: Settings,
    echo: &Notify,
    backlog: &Backlog,
) -> ConnectionEnd {
    let mut ticks = tokio::time::interval(settings.net_ticktime / 4);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Batch { buf: Vec::with_capacity(64 * 1024), pieces: Vec::new(), bytes: 0 };
    let mut wrote_since_tick = false;
    let mut pending = 0;
    loop {
        batch.clear();
        tokio::select! {
            biased;
            msg = rx.recv() => match msg {
                Some((out, weight)) => {
                    batch.push(out);
                    pending = weight;
                    while !batch.full() {
                        match rx.try_recv() {
                            Ok((out, weight)) => {
                                batch.push(out);
                                pending += weight;
                            }
                            Err(_) => break,
                        }
                    }
                }
                None => return ConnectionEnd::Dropped,
            },
            _ = echo.notified() => batch.extend_buf(|b| b.extend_from_slice(&[0, 0, 0, 0])),
            // Tick only when nothing else went out in the last quarter tick time.
            _ = ticks.tick() => {
                if std::mem::take(&mut wrote_since_tick) {
                    continue;
                }
                batch.extend_buf(|b| b.extend_from_slice(&[0, 0, 0, 0]));
            }
        }
        // Taken off as it is written: the backlog is what has not reached the socket.
        if let Err(e) = batch.write_to(&mut wr, backlog, std::mem::take(&mut pending)).await {
            return e.into();
        }
        wrote_since_tick = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings { net_ticktime: Duration::from_millis(100), max_frame: 64 << 20 }
    }

    #[tokio::test]
    async fn a_frame_stalled_in_its_body_times_out_and_pins_only_what_arrived() {
        let (mut peer, mut me) = tokio::io::duplex(1 << 20);
        let mut sent = 32_000_000u32.to_be_bytes().to_vec();
        sent.resize(4 + 300_000, 7);
        peer.write_all(&sent).await.unwrap();
        let mut frame = Vec::new();
        match read_frame(&mut me, &mut frame, settings()).await {
            Err(ConnectionEnd::FrameStalled { size, got, .. }) => assert_eq!((size, got), (32_000_000, 300_000)),
            other => panic!("expected a stall, got {:?}", other.map(|_| ())),
        }
        // Grown by doubling as bytes arrive: at most twice what came, plus one read.
        assert!(frame.capacity() <= 2 * (300_000 + BODY_CHUNK), "a stalled frame reserved {} bytes", frame.capacity());
        drop(peer);
    }

    #[tokio::test]
    async fn ticks_and_whole_frames_read_and_silence_times_out() {
        let (mut peer, mut me) = tokio::io::duplex(1 << 16);
        peer.write_all(&[0, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3]).await.unwrap();
        let mut frame = Vec::new();
        assert!(matches!(read_frame(&mut me, &mut frame, settings()).await, Ok(None)));
        assert!(matches!(read_frame(&mut me, &mut frame, settings()).await, Ok(Some(3))));
        assert_eq!(frame, [1, 2, 3]);
        assert!(matches!(read_frame(&mut me, &mut frame, settings()).await, Err(ConnectionEnd::TickTimeout(_))));
        peer.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        assert!(matches!(read_frame(&mut me, &mut frame, settings()).await, Err(ConnectionEnd::FrameTooLarge { .. })));
    }
}

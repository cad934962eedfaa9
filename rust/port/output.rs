//! A program's output pipe on the port's side: what was read and not yet
//! delivered, and reads that take what the pipe has straight into the
//! buffer, sized by what is waiting.

use super::side::{self, Side};
use std::os::fd::AsRawFd;
use std::task::{ready, Context, Poll};
use tokio::io::Interest;
use tokio::net::unix::pipe;

/// The most read from a program at once (a Linux pipe's default capacity)
/// for a local owner, and at least that for a remote one.
pub(super) const READ_CHUNK: usize = 64 * 1024;

/// The most read at once for a remote owner whose connection has the room,
/// when the pipe holds more than [`READ_CHUNK`] (its default size, which a
/// pipe keeps until its program fills it: see [`grow`]): fewer, larger
/// messages cost the owner's node less per byte.
pub(super) const MAX_READ: usize = 1024 * 1024;

/// One of the program's output pipes, and what was read from it and not
/// yet delivered.
pub(super) struct Output {
    pub(super) pipe: Option<pipe::Receiver>,
    pub(super) buf: Vec<u8>,
    /// Frames may be waiting in `buf` for the owner to have room.
    pub(super) blocked: bool,
    /// Bytes (or EOF) arrived since `buf` was last framed.
    pub(super) fresh: bool,
    /// The pipe reached EOF and its last bytes were framed.
    pub(super) ended: bool,
}

impl Output {
    pub(super) fn new(pipe: Option<pipe::Receiver>) -> Output {
        let ended = pipe.is_none();
        Output { pipe, buf: Vec::new(), blocked: false, fresh: false, ended }
    }

    /// Drops the first `used` bytes (frames sent). An idle port holds no
    /// buffer, nor a large one for a partial frame.
    pub(super) fn consume(&mut self, used: usize) {
        self.buf.drain(..used.min(self.buf.len()));
        if self.buf.is_empty() {
            self.buf = Vec::new();
        } else if self.buf.capacity() > READ_CHUNK && self.buf.len() <= READ_CHUNK / 4 {
            self.buf.shrink_to(READ_CHUNK / 4);
        }
    }

    /// Everything read has been delivered and no more will come.
    pub(super) fn finished(&self) -> bool {
        self.pipe.is_none() && !self.blocked && self.ended
    }
}

/// What a wait on the program's stdout found.
pub(super) enum Got {
    /// Bytes read into the buffer (0: EOF).
    Read(usize),
    /// Bytes moved from the pipe to the side channel, for the relay.
    Spliced(usize),
    /// The side channel broke (its relay went): nothing was moved.
    SideBroken,
}

/// A stream read at least this large makes its port offer its relay a side
/// channel (smaller output, replies, takes the connection's shorter way).
pub(super) const SIDE_MIN: usize = 32 * 1024;

/// As [`read_some`], for the port's stdout; with `side` (the port allows
/// its use now), takes the relay's connection when it comes, and moves
/// what waits in the pipe to it instead of reading it.
pub(super) fn read_output<'a>(out: &'a mut Output, cap: usize, mut side: Option<&'a mut Side>) -> impl std::future::Future<Output = std::io::Result<Got>> + 'a {
    std::future::poll_fn(move |cx| {
        let Some(pipe) = out.pipe.as_mut() else { return Poll::Pending };
        if let Some(side) = side.as_deref_mut() {
            side.poll_answer(cx);
            if let Side::Open(conn) = side {
                loop {
                    ready!(pipe.poll_read_ready(cx))?;
                    if ready!(conn.poll_write_ready(cx)).is_err() {
                        return Poll::Ready(Ok(Got::SideBroken));
                    }
                    // No FIONREAD first: it takes the pipe's lock, which
                    // the program holds while it writes. Which of the two
                    // a `splice` that moves nothing waited for is told by
                    // the socket's room, asked before: only this port's
                    // splices take room, so a socket with room then still
                    // has it, and the pipe was empty; one without room
                    // signals when the relay drains it (it reads every
                    // byte in it: every byte was announced). The readiness
                    // of the one that blocked is cleared (asked after the
                    // splice, the answer could be stale: a pipe full of
                    // output, its readiness cleared, would never signal).
                    let moved = match side::writable(&*conn) {
                        true => pipe.try_io(|| side::splice(&*pipe, &*conn, cap)),
                        false => conn.try_io(Interest::WRITABLE, || side::splice(&*pipe, &*conn, cap)),
                    };
                    match moved {
                        Ok(0) => break, // EOF: the read below reports it.
                        Ok(n) => return Poll::Ready(Ok(Got::Spliced(n))),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        // The relay closed its end (or the pipe could not give what it holds).
                        Err(_) => return Poll::Ready(Ok(Got::SideBroken)),
                    }
                }
            }
        }
        poll_read_some(pipe, &mut out.buf, cap, cx).map_ok(Got::Read)
    })
}

/// The first read of a wake-up: small output (a reply, a few lines) takes
/// one `read`; when it fills this, what else is waiting is read at once.
const FIRST_READ: usize = 16 * 1024;

/// Waits until `pipe` is readable, then appends what it has (up to `cap`
/// bytes) to `out`, read straight into it: the buffer grows by what is
/// read, so an idle port holds none.
/// Cancel-safe: nothing is read until the bytes can be kept. A poll
/// function over the pipe's own readiness, not an `async fn` awaiting
/// `readable()`: the port loop holds this future for each of its pipes, and
/// a readiness future is a waiter node of its own (216 bytes against 40).
pub(super) fn read_some<'a>(mut pipe: Option<&'a mut pipe::Receiver>, out: &'a mut Vec<u8>, cap: usize) -> impl std::future::Future<Output = std::io::Result<usize>> + 'a {
    std::future::poll_fn(move |cx| {
        let Some(pipe) = pipe.as_deref_mut() else { return Poll::Pending };
        poll_read_some(pipe, out, cap, cx)
    })
}

fn poll_read_some(pipe: &mut pipe::Receiver, out: &mut Vec<u8>, cap: usize, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
    use bytes::BufMut;
    let first = FIRST_READ.min(cap);
    loop {
        // No buffer is held while the pipe is idle.
        ready!(pipe.poll_read_ready(cx))?;
        // One more than is read, so that a read that takes all of it still
        // counts as short, and a short read clears the pipe's readiness
        // without a second `read` that would find nothing.
        out.reserve(first + 1);
        let n = match pipe.try_read_buf(&mut (&mut *out).limit(first)) {
            // Not readable after all: its readiness is cleared; wait again.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => other?,
        };
        if n < first {
            return Poll::Ready(Ok(n));
        }
        let waiting = bytes_waiting(pipe);
        if n + waiting == READ_CHUNK && cap > READ_CHUNK {
            grow(pipe);
        }
        let more = waiting.min(cap - n);
        if more == 0 {
            return Poll::Ready(Ok(n));
        }
        out.reserve(more);
        return Poll::Ready(match pipe.try_read_buf(&mut (&mut *out).limit(more)) {
            Ok(m) => Ok(n + m),
            // What was read first is kept; the error (or EOF) shows on the next read.
            Err(_) => Ok(n),
        });
    }
}

/// A pipe's capacity once its program has filled the default one while a
/// remote owner has room for more: the pipe-max-size an unprivileged
/// process may set by default.
const BUSY_PIPE: libc::c_int = 1024 * 1024;

/// Enlarges the pipe of a stream that goes by the side channel (see [`grow`]).
pub(super) fn grow_for_side(out: &Output) {
    if let Some(pipe) = out.pipe.as_ref() {
        grow(pipe);
    }
}

/// Enlarges a pipe its program keeps full: one read then takes up to
/// [`BUSY_PIPE`], and the program and portnode wake each other 16 times
/// less often. Only such pipes grow (each counts against its user's pipe
/// budget, `/proc/sys/fs/pipe-user-pages-soft`); if the kernel refuses,
/// the pipe keeps its size.
fn grow(pipe: &pipe::Receiver) {
    // SAFETY: F_SETPIPE_SZ on a pipe we own; failure changes nothing.
    unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, BUSY_PIPE) };
}

/// Bytes waiting in `pipe` (`FIONREAD`); [`READ_CHUNK`] if it cannot say.
fn bytes_waiting(pipe: &pipe::Receiver) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is valid.
    match unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut n as *mut libc::c_int) } {
        0 => usize::try_from(n).unwrap_or(READ_CHUNK),
        _ => READ_CHUNK,
    }
}

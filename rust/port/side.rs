//! The side channel: stream output for an owner on this host goes from the
//! program's pipe to its relay over a Unix socket, by `splice`, instead of
//! through the distribution connection.
//!
//! Through the connection, each byte costs portnode a read and a loopback
//! TCP send (which runs the receiver's TCP processing too), and the owner's
//! VM the distribution's decoding: about 1.5x the CPU an erts port's pipe
//! costs, beyond what two cores carry at erts's rate. A Unix socket fed by
//! `splice` takes the program's pages without a copy, and the VM reads it
//! as it reads a pipe.
//!
//! How a handle gets one: at its first large stream read for an owner
//! with a relay, it offers the relay ([`offer`]) this node's socket path
//! and a token; a relay in a VM on this host connects and writes the token;
//! the listener ([`serve`]) hands the connection to the handle that made
//! the offer. Until then (and for good, if the relay is on another host or
//! does not know the offer) output goes through the connection.
//!
//! The bytes themselves say nothing of where they go: the handle announces
//! each run it wrote to the socket as a relay batch, `{'$portnode_relay',
//! Owner, side, Bytes}`, and the relay reads that many bytes and sends them
//! to the owner as port messages. So the announcement orders them with
//! everything else the handle sends through the relay (see
//! [`super::relay`]); a relay that cannot read them exits, and the handle
//! ends with `{relay_down, _}` as it does for any batch lost.

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::{debug, warn};

/// A token: what a relay writes first, to say which offer it answers.
pub(crate) type Token = [u8; 16];

/// Offers made and not answered: each handle's token, and where its connection goes.
static OFFERS: Mutex<Option<HashMap<Token, oneshot::Sender<UnixStream>>>> = Mutex::new(None);

/// The listener's path, once it listens (`None` if it could not).
static LISTENING: OnceLock<Option<PathBuf>> = OnceLock::new();

/// How long a connecting relay has to write its token (it writes it as it
/// connects): one that does not holds up the next for no longer.
const TOKEN_WAIT: Duration = Duration::from_secs(1);

/// The send buffer asked for a relay's socket (the kernel doubles it): the
/// program's pipe drains into it while the relay reads. 4 MiB measured no
/// faster, and each streaming port may fill its own.
const SOCKET_BUFFER: libc::c_int = 512 << 10;

/// An offer a handle made: the token is withdrawn when it is dropped.
pub(crate) struct Offer {
    token: Token,
    pub(crate) answer: oneshot::Receiver<UnixStream>,
}

impl Drop for Offer {
    fn drop(&mut self) {
        if let Some(offers) = OFFERS.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            offers.remove(&self.token);
        }
    }
}

/// Makes an offer: the socket's path and the token to send the relay, and
/// the offer to wait on. `None` if this node has no listener (it could not
/// make one: output goes through the connection).
pub(crate) fn offer() -> Option<(&'static std::path::Path, Token, Offer)> {
    let path = LISTENING.get_or_init(listen).as_deref()?;
    let token = token()?;
    let (tx, answer) = oneshot::channel();
    OFFERS.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashMap::new).insert(token, tx);
    Some((path, token, Offer { token, answer }))
}

/// Starts listening, in a directory of its own (mode 0700) in portnode's
/// runtime directory: only portnode's user, whose VMs run relays, may
/// reach the socket, from the moment it is bound.
fn listen() -> Option<PathBuf> {
    let made = crate::notify::runtime_dir::ensure().and_then(|dir| {
        let dir = dir.join("relay");
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let path = dir.join("relay.sock");
        let listener = UnixListener::bind(&path)?;
        Ok((path, listener))
    });
    match made {
        Ok((path, listener)) => {
            // Blocking accepts, and a token's read, on a thread of their own:
            // rare, and never in a port's way.
            let spawned = std::thread::Builder::new().name("side-channel".into()).spawn(move || serve(listener));
            match spawned {
                Ok(_) => Some(path),
                Err(e) => {
                    warn!(error = %e, "cannot start the side channel's listener; stream output goes through the connection");
                    None
                }
            }
        }
        Err(e) => {
            warn!(error = %e, "cannot listen for relays; stream output goes through the connection");
            None
        }
    }
}

/// Accepts relays' connections and hands each to the offer its token names.
fn serve(listener: UnixListener) {
    for conn in listener.incoming() {
        let mut conn = match conn {
            Ok(conn) => conn,
            Err(e) => {
                // Out of fds, say: the relay's connect waits in the backlog meanwhile.
                debug!(error = %e, "side channel: accept failed");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if !same_user(&conn) {
            debug!("side channel: a connection from another user");
            continue;
        }
        let mut token = [0u8; 16];
        let read = conn.set_read_timeout(Some(TOKEN_WAIT)).and_then(|_| conn.read_exact(&mut token));
        if let Err(e) = read {
            debug!(error = %e, "side channel: a connection without a token");
            continue;
        }
        let taker = OFFERS.lock().unwrap_or_else(|e| e.into_inner()).as_mut().and_then(|o| o.remove(&token));
        let Some(taker) = taker else {
            debug!("side channel: a connection with a token no handle offered");
            continue;
        };
        if conn.set_read_timeout(None).and_then(|_| conn.set_nonblocking(true)).is_err() {
            continue;
        }
        // SAFETY: SO_SNDBUF on a socket we own, with a valid c_int; failure keeps the default.
        unsafe {
            libc::setsockopt(conn.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, (&SOCKET_BUFFER as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t)
        };
        // A handle that has gone meanwhile drops it: its relay reads EOF.
        let _ = taker.send(conn);
    }
}

/// The peer runs as portnode's own user (`SO_PEERCRED`).
fn same_user(conn: &UnixStream) -> bool {
    let mut cred = libc::ucred { pid: 0, uid: u32::MAX, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes one ucred through a valid pointer of that size.
    let got = unsafe { libc::getsockopt(conn.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, (&mut cred as *mut libc::ucred).cast(), &mut len) };
    // SAFETY: geteuid cannot fail.
    got == 0 && cred.uid == unsafe { libc::geteuid() }
}

fn token() -> Option<Token> {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most 16 bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    (n == 16).then_some(bytes)
}

/// Moves up to `len` bytes from `pipe` to `socket` (both non-blocking),
/// without a copy; `WouldBlock` if the socket is full.
pub(crate) fn splice(pipe: &impl AsRawFd, socket: &impl AsRawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both fds are open for the call; null offsets: a pipe and a socket have none.
    let n = unsafe { libc::splice(pipe.as_raw_fd(), std::ptr::null_mut(), socket.as_raw_fd(), std::ptr::null_mut(), len, libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// True if `socket` has room now (`POLLOUT`: a Unix socket has it while
/// at most a quarter of its buffer is taken, so a `splice` that found no
/// room did not find it there).
pub(crate) fn writable(socket: &impl AsRawFd) -> bool {
    let mut fd = libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n == 1 && fd.revents & libc::POLLOUT != 0
}

/// A handle's side channel.
pub(crate) enum Side {
    /// Offered to the relay; output goes through the connection meanwhile.
    Offered(Offer),
    Open(tokio::net::UnixStream),
    /// Not to be had (no listener, or the socket broke): through the connection.
    Off,
}

impl Side {
    /// Takes the relay's connection, if it has come.
    pub(crate) fn poll_answer(&mut self, cx: &mut std::task::Context<'_>) {
        let Side::Offered(offer) = self else { return };
        match std::pin::Pin::new(&mut offer.answer).poll(cx) {
            std::task::Poll::Ready(Ok(conn)) => {
                debug!("side channel: the relay's connection taken");
                *self = match tokio::net::UnixStream::from_std(conn) {
                    Ok(conn) => Side::Open(conn),
                    Err(e) => {
                        warn!(error = %e, "side channel: cannot register the relay's connection");
                        Side::Off
                    }
                }
            }
            std::task::Poll::Ready(Err(_)) => *self = Side::Off,
            std::task::Poll::Pending => {}
        }
    }
}

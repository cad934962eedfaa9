//! One program's notify socket: a unix datagram socket bound in a
//! directory of its own (`<runtime dir>/<n>/notify`, the directory 0700 and
//! owned by the program's user), that receives each datagram with its
//! sender's credentials (`SO_PASSCRED`), so that the port can check the
//! sender is one of the program's processes. Passed fds (`FDSTORE=1`,
//! `BARRIER=1`) are kept only until the datagram is dealt with: closing a
//! barrier's fd is what tells its sender (`systemd-notify`, which waits
//! for it) that what it sent before was read.

use super::message::MAX_DATAGRAM;
use super::runtime_dir;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::io::unix::AsyncFd;
use tracing::debug;

/// A datagram and who sent it, as the kernel vouches.
#[derive(Debug)]
pub struct Datagram {
    pub pid: i32,
    pub uid: u32,
    pub bytes: Vec<u8>,
    /// Fds that came with it: closed when it is dropped.
    pub fds: Vec<OwnedFd>,
}

/// A program's notify socket; dropping it removes its directory.
pub struct NotifySocket {
    socket: AsyncFd<UnixDatagram>,
    dir: PathBuf,
    path: PathBuf,
}

/// The longest path a unix socket address holds (`sun_path`, less its NUL).
const MAX_PATH: usize = 107;

impl NotifySocket {
    /// A new socket in a new directory, both handed to `owner` (uid, gid)
    /// when the program runs as another user than portnode.
    pub fn create(owner: Option<(libc::uid_t, libc::gid_t)>) -> io::Result<NotifySocket> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let dir = runtime_dir::ensure()?.join(NEXT.fetch_add(1, Ordering::Relaxed).to_string());
        let path = dir.join("notify");
        if path.as_os_str().len() > MAX_PATH {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let made = (|| {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
            let socket = UnixDatagram::bind(&path)?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
            }
            pass_credentials(socket.as_raw_fd())?;
            socket.set_nonblocking(true)?;
            // SAFETY: the socket is ours alone, and stays open while registered.
            unsafe { AsyncFd::register(socket) }.map_err(io::Error::from)
        })();
        match made {
            Ok(socket) => Ok(NotifySocket { socket, dir, path }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// What the program gets as `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next datagram that came with credentials and whole. Cancel-safe.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<io::Result<Datagram>> {
        loop {
            let mut guard = std::task::ready!(self.socket.poll_read_ready(cx))?;
            match guard.try_io(|s| receive(s.as_raw_fd())) {
                Ok(Ok(Some(datagram))) => return Poll::Ready(Ok(datagram)),
                // Nothing to keep (no credentials, truncated): read on.
                Ok(Ok(None)) => {}
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // Not readable after all: its readiness is cleared; wait again.
                Err(_would_block) => {}
            }
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        // The program's user owns the directory and may have put things in it.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pass_credentials(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a pointer to a c_int and its size.
    let r = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_PASSCRED, (&on as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Room for the credentials and a few passed fds, aligned for cmsghdr.
#[repr(C, align(8))]
struct ControlBuffer([u8; 512]);

/// One `recvmsg`: the datagram with its sender's credentials, `None` for
/// one to ignore (truncated, or without credentials; its fds closed).
fn receive(fd: RawFd) -> io::Result<Option<Datagram>> {
    let mut bytes = vec![0u8; MAX_DATAGRAM];
    let mut control = ControlBuffer([0; 512]);
    let mut iov = libc::iovec { iov_base: bytes.as_mut_ptr().cast(), iov_len: bytes.len() };
    // SAFETY: a zeroed msghdr is valid; the fields set point to live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len() as _;
    // SAFETY: recvmsg into the buffers msg describes.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC | libc::MSG_TRUNC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut credentials = None;
    let mut fds = Vec::new();
    // SAFETY: walking the control messages recvmsg wrote, within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::SOL_SOCKET, libc::SCM_CREDENTIALS) if len >= std::mem::size_of::<libc::ucred>() => {
                    credentials = Some(std::ptr::read_unaligned(data as *const libc::ucred));
                }
                (libc::SOL_SOCKET, libc::SCM_RIGHTS) => {
                    for i in 0..len / std::mem::size_of::<RawFd>() {
                        // The kernel made each fd for this message: ours to own.
                        fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned((data as *const RawFd).add(i))));
                    }
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let n = n as usize;
    if n > MAX_DATAGRAM || msg.msg_flags & libc::MSG_TRUNC != 0 {
        debug!(len = n, "notify: ignored a datagram too long for sd_notify");
        return Ok(None);
    }
    let Some(credentials) = credentials else {
        debug!("notify: ignored a datagram without credentials");
        return Ok(None);
    };
    bytes.truncate(n);
    Ok(Some(Datagram { pid: credentials.pid, uid: credentials.uid, bytes, fds }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_datagram_comes_with_its_senders_pid_and_passed_fds_are_closed() {
        let socket = NotifySocket::create(None).expect("socket");
        let meta = std::fs::metadata(socket.path().parent().unwrap()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        let sender = UnixDatagram::unbound().unwrap();
        sender.send_to(b"READY=1\nSTATUS=up", socket.path()).unwrap();
        let got = std::future::poll_fn(|cx| socket.poll_recv(cx)).await.unwrap();
        assert_eq!(got.pid, std::process::id() as i32);
        assert_eq!(got.bytes, b"READY=1\nSTATUS=up");
        // An oversized datagram is skipped, the next one read.
        sender.send_to(&vec![b'x'; MAX_DATAGRAM + 10], socket.path()).unwrap();
        sender.send_to(b"WATCHDOG=1", socket.path()).unwrap();
        let got = std::future::poll_fn(|cx| socket.poll_recv(cx)).await.unwrap();
        assert_eq!(got.bytes, b"WATCHDOG=1");
        // An fd passed along (BARRIER=1) is kept with its datagram, then
        // closed, not kept: the pipe's reader then sees EOF.
        let (reader, writer) = crate::spawner::pipes::pipe_pair().unwrap();
        send_with_fd(&sender, socket.path(), b"BARRIER=1", writer.as_raw_fd());
        drop(writer);
        let got = std::future::poll_fn(|cx| socket.poll_recv(cx)).await.unwrap();
        assert_eq!((got.bytes.as_slice(), got.fds.len()), (&b"BARRIER=1"[..], 1));
        drop(got);
        let mut byte = [0u8; 1];
        // SAFETY: read(2) into a one-byte buffer.
        assert_eq!(unsafe { libc::read(reader.as_raw_fd(), byte.as_mut_ptr().cast(), 1) }, 0, "the passed fd is still open");
        let dir = socket.path().parent().unwrap().to_owned();
        drop(socket);
        assert!(!dir.exists());
        runtime_dir::remove();
        assert!(!runtime_dir::path().exists());
    }

    fn send_with_fd(sender: &UnixDatagram, to: &Path, bytes: &[u8], fd: RawFd) {
        sender.connect(to).unwrap();
        let mut control = ControlBuffer([0; 512]);
        let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut _, iov_len: bytes.len() };
        // SAFETY: sendmsg with one SCM_RIGHTS message in an aligned buffer.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.0.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(4) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(4) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut RawFd, fd);
            assert_eq!(libc::sendmsg(sender.as_raw_fd(), &msg, 0), bytes.len() as isize);
        }
    }
}

//! Bytes and file descriptors over the unix stream socket between portnode
//! and its spawner: `sendmsg`/`recvmsg` with SCM_RIGHTS.
//!
//! The kernel hands a message's fds over with its first byte, and one
//! `recvmsg` never returns the fds of two sends: so fds can be queued as
//! they arrive and taken in order by the messages that announce them.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The most fds one send carries: a `Spawn` brings up to seven (stdin,
/// stdout, stderr, its cgroup, and the cgroup.procs of up to three v1
/// cgroups for its limits). The control buffers (64 bytes) hold twelve.
const MAX_FDS: usize = 8;

/// A pair of connected unix stream sockets, close-on-exec.
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair fills two fds on success; each is owned once below.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and nothing else owns them.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Above the stdio fds, which the spawner points at /dev/null (a
    // portnode started with its stdin closed would get fd 0 here).
    Ok((above_stdio(a)?, above_stdio(b)?))
}

fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on our own fd returns a new one or -1.
    let high = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if high < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns; the low one closes as `fd` drops.
    Ok(unsafe { OwnedFd::from_raw_fd(high) })
}

/// Sends `bytes` (some of them: returns how many), with `fds` attached.
pub fn send(sock: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
    // u64s keep the control buffer aligned as cmsghdr wants.
    let mut control = [0u64; 8];
    // SAFETY: a msghdr over our iovec and control buffer; CMSG_* walk only
    // within the control buffer, sized for MAX_FDS fds.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            assert!(fds.len() <= MAX_FDS);
            let data_len = std::mem::size_of_val(fds) as u32;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(data_len) as usize;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(data_len) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast::<RawFd>(), fds.len());
        }
        let n = libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL);
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
    }
}

/// Sends all of `bytes`, `fds` with the first of them, on a blocking socket.
pub fn send_all(sock: RawFd, mut bytes: &[u8], mut fds: &[RawFd]) -> io::Result<()> {
    while !bytes.is_empty() {
        match send(sock, bytes, fds) {
            Ok(n) => {
                bytes = &bytes[n..];
                fds = &[];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Receives into `buf`; the fds that came with the bytes are appended to
/// `fds` (close-on-exec). Returns the byte count, 0 at EOF. Fds the
/// kernel had to drop (MSG_CTRUNC: no room in our fd table) are an error:
/// the connection cannot tell which message they belonged to.
pub fn recv(sock: &impl AsRawFd, buf: &mut [u8], fds: &mut VecDeque<OwnedFd>) -> io::Result<usize> {
    recv_flags(sock, buf, fds, 0)
}

/// [`recv`] that does not wait: `WouldBlock` if nothing is there.
pub fn recv_now(sock: &impl AsRawFd, buf: &mut [u8], fds: &mut VecDeque<OwnedFd>) -> io::Result<usize> {
    recv_flags(sock, buf, fds, libc::MSG_DONTWAIT)
}

fn recv_flags(sock: &impl AsRawFd, buf: &mut [u8], fds: &mut VecDeque<OwnedFd>, flags: libc::c_int) -> io::Result<usize> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut control = [0u64; 8];
    // SAFETY: as in `send`; the fds the kernel wrote into the control
    // buffer are new and owned by no one else, and each is taken once.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC | flags);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let count = ((*cmsg).cmsg_len - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    fds.push_back(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            // Some fds were dropped (no room in our fd table): the ones that
            // follow would be taken by the wrong messages.
            return Err(io::Error::other("file descriptors lost in transit (fd table full)"));
        }
        Ok(n as usize)
    }
}

//! A program's terminal (`{pty, true}`, `{pty, {Rows, Cols}}`): a new
//! pseudo-terminal whose slave becomes the program's stdin and stdout
//! (and stderr, unless `{stderr, message}`), and its controlling terminal
//! (the spawner's child calls `setsid` and `TIOCSCTTY`). portnode keeps the
//! master: it reads the program's output from it, writes its input to it,
//! resizes it (`portnode:winsz/3`: the kernel sends the program SIGWINCH),
//! and closes it when the port closes, which hangs the terminal up (the
//! kernel sends the session leader SIGHUP).
//!
//! Many programs buffer their output in blocks, or refuse to run, when
//! stdout is not a terminal: that is why a port would want one. Why the
//! line discipline's settings are what they are: see [`configure`] and
//! docs/pty.md.

use super::settings::Framing;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A terminal's size, `{pty, true}`'s as a terminal emulator's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub rows: u16,
    pub cols: u16,
}

pub const DEFAULT_SIZE: Size = Size { rows: 24, cols: 80 };

/// The character [`eof`] sends: Ctrl-D (`VEOF`, set so by [`configure`]).
pub const EOF: u8 = 4;

impl Size {
    /// Rows and columns from Erlang integers: 1..=65535 each.
    pub fn of(rows: i64, cols: i64) -> Option<Size> {
        let dim = |n: i64| u16::try_from(n).ok().filter(|&n| n > 0);
        Some(Size { rows: dim(rows)?, cols: dim(cols)? })
    }
}

/// `{pty, true | false | {Rows, Cols}}`'s value. Linux only: elsewhere
/// every value is refused (a `badarg` naming the setting).
pub fn parse(value: &eetf::Term) -> Result<Option<Size>, ()> {
    use crate::etf::{as_atom, as_int, as_tuple};
    if !cfg!(target_os = "linux") {
        return Err(());
    }
    match (as_atom(value), as_tuple(value)) {
        (Some("true"), _) => Ok(Some(DEFAULT_SIZE)),
        (Some("false"), _) => Ok(None),
        (_, Some([rows, cols])) => Size::of(as_int(rows).ok_or(())?, as_int(cols).ok_or(())?).map(Some).ok_or(()),
        _ => Err(()),
    }
}

/// A new terminal: the master (portnode's end) and the slave (the
/// program's), both close-on-exec, the slave set up for `framing` at `size`.
pub struct Pair {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a new pty, as `openpty(3)` does (without its path lookup: the
/// slave is opened from the master with `TIOCGPTPEER`, so it is the pty
/// just made, whatever happens in /dev/pts meanwhile).
pub fn open(size: Size, framing: Framing) -> io::Result<Pair> {
    // SAFETY: posix_openpt returns a new fd or -1.
    let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if master < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    // SAFETY: unlockpt and ioctl on the master we own.
    let slave = unsafe {
        if libc::unlockpt(master.as_raw_fd()) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC)
    };
    if slave < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    configure(slave.as_raw_fd(), framing)?;
    resize(slave.as_raw_fd(), size)?;
    Ok(Pair { master, slave })
}

/// The line discipline's settings, chosen so that a port's framing works
/// as on pipes:
///
/// - `{line, N}` and `stream`: canonical mode (the program reads whole
///   lines; Ctrl-C, Ctrl-Z, Ctrl-D work as at a terminal, so a REPL such as
///   `python3 -i` runs as it does for a user), but **no echo** (the owner
///   would get its own input back as output), **no `\n` to `\r\n`** on
///   output (lines arrive as a pipe gives them), and no XON/XOFF (a Ctrl-S
///   in the data must not stop the program's output).
/// - `{packet, N}`: raw (`cfmakeraw`): every byte passes unchanged both ways.
fn configure(fd: RawFd, framing: Framing) -> io::Result<()> {
    // SAFETY: tcgetattr/tcsetattr on a terminal fd we own, into a zeroed struct.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) != 0 {
            return Err(io::Error::last_os_error());
        }
        match framing {
            Framing::Packet(_) => libc::cfmakeraw(&mut t),
            Framing::Line(_) | Framing::Stream => {
                t.c_lflag &= !(libc::ECHO | libc::ECHOE | libc::ECHOK | libc::ECHONL | libc::ECHOCTL | libc::ECHOKE);
                t.c_lflag |= libc::ICANON | libc::ISIG;
                t.c_oflag &= !libc::ONLCR;
                t.c_iflag &= !(libc::IXON | libc::IXOFF);
                t.c_iflag |= libc::IUTF8;
                t.c_cc[libc::VEOF] = EOF;
            }
        }
        if libc::tcsetattr(fd, libc::TCSANOW, &t) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sets the terminal's size (on its master or slave): the kernel sends
/// SIGWINCH to its foreground process group if the size changed.
pub fn resize(fd: RawFd, size: Size) -> io::Result<()> {
    let ws = libc::winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize through the pointer, which is valid.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws as *const libc::winsize) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the master non-blocking, and a second fd of it: one for reading
/// the program's output, one for writing its input (each registered with
/// the runtime on its own), and the original kept for resizing. All three
/// share one open file: the terminal hangs up once all are closed.
pub fn split(master: OwnedFd) -> io::Result<(OwnedFd, OwnedFd, OwnedFd)> {
    crate::spawner::pipes::set_nonblocking(master.as_raw_fd())?;
    let reader = master.try_clone()?;
    let writer = master.try_clone()?;
    Ok((reader, writer, master))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size_of(fd: RawFd) -> (u16, u16) {
        let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCGWINSZ writes one winsize through a valid pointer.
        assert_eq!(unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws as *mut libc::winsize) }, 0);
        (ws.ws_row, ws.ws_col)
    }

    #[test]
    fn sizes_are_checked() {
        assert_eq!(Size::of(40, 132), Some(Size { rows: 40, cols: 132 }));
        for (r, c) in [(0, 80), (24, 0), (-1, 80), (24, 65536)] {
            assert_eq!(Size::of(r, c), None, "{r}x{c}");
        }
    }

    #[test]
    fn a_new_terminal_has_its_size_and_line_settings() {
        let pair = open(Size { rows: 40, cols: 132 }, Framing::Line(80)).expect("a pty");
        assert_eq!(size_of(pair.slave.as_raw_fd()), (40, 132));
        // SAFETY: isatty and tcgetattr on our own fds.
        let t = unsafe {
            assert_eq!(libc::isatty(pair.slave.as_raw_fd()), 1);
            let mut t: libc::termios = std::mem::zeroed();
            assert_eq!(libc::tcgetattr(pair.slave.as_raw_fd(), &mut t), 0);
            t
        };
        assert_eq!(t.c_lflag & libc::ECHO, 0);
        assert_ne!(t.c_lflag & libc::ICANON, 0);
        assert_eq!(t.c_oflag & libc::ONLCR, 0);
        resize(pair.master.as_raw_fd(), Size { rows: 50, cols: 100 }).expect("resized");
        assert_eq!(size_of(pair.slave.as_raw_fd()), (50, 100));
    }

    #[test]
    fn packet_framing_gets_a_raw_terminal() {
        let pair = open(DEFAULT_SIZE, Framing::Packet(4)).expect("a pty");
        // SAFETY: tcgetattr on our own fd.
        let t = unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            assert_eq!(libc::tcgetattr(pair.slave.as_raw_fd(), &mut t), 0);
            t
        };
        assert_eq!(t.c_lflag & (libc::ICANON | libc::ECHO | libc::ISIG), 0);
        assert_eq!(t.c_oflag & libc::OPOST, 0);
    }
}

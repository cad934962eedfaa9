//! The messages between portnode and its spawner. Each is a big-endian u32
//! length, then a tag byte and its fields; byte strings are a u32 length
//! and the bytes. File descriptors travel beside the bytes (SCM_RIGHTS), in
//! the same order as the messages they belong to: a `Spawn` brings the
//! program's ends of its pipes and its leaf cgroup's directory, those its
//! flags announce. portnode makes the pipes (so that it keeps its own ends
//! from the start, and an `emfile` is its own, as with erts).
//!
//! Both ends are this binary, but a message is still checked as it is
//! decoded: a malformed one is an error, never a panic.

use crate::program::Privileges;
use crate::program::Stderr;
use std::io;

/// The largest message either end accepts: arguments and environment
/// beyond what exec takes (it fails with E2BIG, which the program reports
/// as its exit status) still fit. A request that would be larger is not
/// sent: encoding it fails with E2BIG (see [`Request::encode`]), which the
/// program reports the same way. (An `open_port` that fits in a
/// distribution frame of the default `--max-frame`, 256 MiB, can still be
/// larger once portnode's environment is added to it.)
pub const MAX_MESSAGE: usize = 256 << 20;

/// What to start, with everything resolved: the spawner only copies it
/// into place and execs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Command {
    pub path: Vec<u8>,
    pub argv: Vec<Vec<u8>>,
    pub envp: Vec<Vec<u8>>,
    pub cwd: Option<Vec<u8>>,
    /// A pipe into the program (its stdin, or fd 3 without `use_stdio`):
    /// its read end comes with the request.
    pub stdin: bool,
    /// A pipe from the program (its stdout, or fd 4 without `use_stdio`):
    /// its write end comes with the request.
    pub stdout: bool,
    pub use_stdio: bool,
    /// With `Stderr::Message` (and `use_stdio`), a third pipe's write end
    /// comes with the request.
    pub stderr: Stderr,
    pub privileges: Privileges,
    /// The program's leaf cgroup directory travels with the request.
    pub in_cgroup: bool,
    /// Keep the program a zombie once it has exited, until portnode says
    /// `Reap` (its pid is its process group's id, which portnode may still
    /// signal); otherwise it is reaped as soon as its exit is reported.
    pub hold: bool,
    /// Add `WATCHDOG_PID=<the program's pid>` to its environment (sd_notify's
    /// watchdog names the process it watches, known only once it is cloned).
    pub watchdog_pid: bool,
    /// A terminal's slave comes with the request (after the cgroup): the
    /// program's stdin, stdout and (but with `Stderr::Message`) stderr,
    /// and its controlling terminal, in a session of its own.
    pub pty: bool,
    /// How many `cgroup.procs` of v1 cgroups (its limits) come last: the
    /// child writes itself into each before it execs.
    pub join: u8,
}

/// portnode to spawner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Start a program; answered with `Started` or `Failed`, in order.
    Spawn(Command),
    /// Reap this held program once it has exited (at once if it has).
    /// Until then its pid stays reserved, so that portnode may signal it.
    Reap(i32),
    /// A restart grant: start `command` the moment program `after` exits,
    /// whatever its status, without waiting for portnode, if nothing of
    /// `after` is left in its leaf cgroup. Its fds are a `Spawn`'s, then
    /// `after`'s leaf directory. Answered once, when it is used or given
    /// up: `Restarted`, `RestartFailed` or `NotRestarted` (at once if
    /// `after` has already exited or is not a running program, or if the
    /// replacement or the old leaf's `cgroup.events` cannot be made ready
    /// now; at its exit if its leaf still holds a process).
    Arm { id: u32, after: i32, command: Command },
    /// Gives grant `id` up: answered `NotRestarted` if it was still armed;
    /// if it was used, its answer has gone already, and this is ignored.
    Disarm(u32),
}

/// Spawner to portnode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The program runs (it has exec'd).
    Started { pid: i32 },
    /// The program could not start: the errno (from the spawner, or from
    /// the child before exec).
    /// `step`: the child's step that failed ([`crate::program::Step`]), 0 for none.
    Failed { errno: i32, step: u8 },
    /// A program has exited; `status` as waitpid gives it. A held program
    /// is not reaped yet; any other already is.
    Exited { pid: i32, status: i32 },
    /// Grant `id` was used: its program runs, as `pid`.
    Restarted { id: u32, pid: i32 },
    /// Grant `id` was used, and its program could not start (as `Failed`).
    RestartFailed { id: u32, errno: i32, step: u8 },
    /// Grant `id` was given up (disarmed, or its program had exited before
    /// it came): nothing was started, and its fds are closed.
    NotRestarted { id: u32 },
}

const SPAWN: u8 = b's';
const REAP: u8 = b'r';
const STARTED: u8 = b'S';
const FAILED: u8 = b'F';
const EXITED: u8 = b'X';
const ARM: u8 = b'a';
const DISARM: u8 = b'd';
const RESTARTED: u8 = b'R';
const RESTART_FAILED: u8 = b'E';
const NOT_RESTARTED: u8 = b'N';

/// Appends one framed message to `out`; or nothing, and E2BIG, if its body
/// would be longer than [`MAX_MESSAGE`] (the other end would refuse it, and
/// end: the spawner and portnode, with every program).
fn frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Writer) -> Result<(), TooLong>) -> io::Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let written = body(&mut Writer { out: &mut *out, body_start: start + 4 });
    match written.and_then(|()| length(out.len() - start - 4)) {
        Ok(len) => {
            out[start..start + 4].copy_from_slice(&len.to_be_bytes());
            Ok(())
        }
        Err(TooLong) => {
            out.truncate(start);
            Err(io::Error::from_raw_os_error(libc::E2BIG))
        }
    }
}

/// A message body, or a part of one, longer than [`MAX_MESSAGE`].
#[derive(Debug)]
struct TooLong;

/// `n` as a length field, if it is one this protocol accepts.
fn length(n: usize) -> Result<u32, TooLong> {
    if n > MAX_MESSAGE {
        return Err(TooLong);
    }
    u32::try_from(n).map_err(|_| TooLong)
}

/// The body of the first complete message in `buf` and the bytes it takes
/// with its header, if `buf` holds a whole one.
pub fn next_message(buf: &[u8]) -> io::Result<Option<(&[u8], usize)>> {
    let Some(head) = buf.get(..4) else { return Ok(None) };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > MAX_MESSAGE {
        return Err(bad("message too long"));
    }
    Ok(buf.get(4..4 + len).map(|body| (body, 4 + len)))
}

impl Command {
    /// How many fds come with this request: pipe ends, then the cgroup.
    pub fn fd_count(&self) -> usize {
        usize::from(self.stdin) + usize::from(self.stdout) + usize::from(self.stderr_pipe()) + usize::from(self.in_cgroup) + usize::from(self.pty) + usize::from(self.join)
    }

    /// A pipe of its own for stderr: for `{stderr, message}`, and for the
    /// default (portnode logs its lines), with or without `use_stdio`.
    pub fn stderr_pipe(&self) -> bool {
        match self.stderr {
            Stderr::Message => self.use_stdio,
            // On a terminal, stderr is the terminal.
            Stderr::Log => !self.pty,
            Stderr::ToStdout => false,
        }
    }
}

impl Request {
    /// Appends the request to `out`. A `Spawn` whose arguments and
    /// environment make it longer than [`MAX_MESSAGE`] is not appended (not
    /// a byte of it): E2BIG, as exec would say of it.
    pub fn encode(&self, out: &mut Vec<u8>) -> io::Result<()> {
        frame(out, |w| match self {
            Request::Spawn(c) => {
                w.u8(SPAWN)?;
                command(w, c)
            }
            Request::Reap(pid) => {
                w.u8(REAP)?;
                w.u32(*pid as u32)
            }
            Request::Arm { id, after, command: c } => {
                w.u8(ARM)?;
                w.u32(*id)?;
                w.u32(*after as u32)?;
                command(w, c)
            }
            Request::Disarm(id) => {
                w.u8(DISARM)?;
                w.u32(*id)
            }
        })
    }

    pub fn decode(body: &[u8]) -> io::Result<Request> {
        let mut r = Reader(body);
        let request = match r.u8()? {
            SPAWN => Request::Spawn(read_command(&mut r)?),
            REAP => Request::Reap(r.u32()? as i32),
            ARM => {
                let id = r.u32()?;
                let after = r.u32()? as i32;
                Request::Arm { id, after, command: read_command(&mut r)? }
            }
            DISARM => Request::Disarm(r.u32()?),
            _ => return Err(bad("request tag")),
        };
        r.end()?;
        Ok(request)
    }
}

/// A `Spawn`'s or an `Arm`'s program.
fn command(w: &mut Writer, c: &Command) -> Result<(), TooLong> {
    w.bytes(&c.path)?;
    w.list(&c.argv)?;
    w.list(&c.envp)?;
    w.opt_bytes(c.cwd.as_deref())?;
    w.u8(u8::from(c.stdin) | u8::from(c.stdout) << 1 | u8::from(c.use_stdio) << 2 | u8::from(c.in_cgroup) << 3 | u8::from(c.hold) << 4 | u8::from(c.watchdog_pid) << 5 | u8::from(c.pty) << 6)?;
    w.u8(match c.stderr {
        Stderr::Log => 0,
        Stderr::ToStdout => 1,
        Stderr::Message => 2,
    })?;
    privileges(w, &c.privileges)?;
    w.u8(c.join)
}

fn read_command(r: &mut Reader) -> io::Result<Command> {
    let path = r.bytes()?;
    let argv = r.list()?;
    let envp = r.list()?;
    let cwd = r.opt_bytes()?;
    let flags = r.u8()?;
    let stderr = match r.u8()? {
        0 => Stderr::Log,
        1 => Stderr::ToStdout,
        2 => Stderr::Message,
        _ => return Err(bad("stderr mode")),
    };
    let privileges = read_privileges(r)?;
    let join = r.u8()?;
    Ok(Command {
        path,
        argv,
        envp,
        cwd,
        stdin: flags & 1 != 0,
        stdout: flags & 2 != 0,
        use_stdio: flags & 4 != 0,
        in_cgroup: flags & 8 != 0,
        hold: flags & 16 != 0,
        watchdog_pid: flags & 32 != 0,
        pty: flags & 64 != 0,
        join,
        stderr,
        privileges,
    })
}

impl Reply {
    /// Appends the reply to `out`: a tag, one or two 32-bit numbers and for
    /// `Failed` and `RestartFailed` a step byte, so at most 13 bytes, whose
    /// length needs no check.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(15);
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        match *self {
            Reply::Started { pid } => {
                out.push(STARTED);
                out.extend_from_slice(&pid.to_be_bytes());
            }
            Reply::Failed { errno, step } => {
                out.push(FAILED);
                out.extend_from_slice(&errno.to_be_bytes());
                out.push(step);
            }
            Reply::Exited { pid, status } => {
                out.push(EXITED);
                out.extend_from_slice(&pid.to_be_bytes());
                out.extend_from_slice(&status.to_be_bytes());
            }
            Reply::Restarted { id, pid } => {
                out.push(RESTARTED);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&pid.to_be_bytes());
            }
            Reply::RestartFailed { id, errno, step } => {
                out.push(RESTART_FAILED);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&errno.to_be_bytes());
                out.push(step);
            }
            Reply::NotRestarted { id } => {
                out.push(NOT_RESTARTED);
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
        let len = (out.len() - start - 4) as u32; // at most 10: no check needed
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    pub fn decode(body: &[u8]) -> io::Result<Reply> {
        let mut r = Reader(body);
        let reply = match r.u8()? {
            STARTED => Reply::Started { pid: r.u32()? as i32 },
            FAILED => Reply::Failed { errno: r.u32()? as i32, step: r.u8()? },
            EXITED => Reply::Exited { pid: r.u32()? as i32, status: r.u32()? as i32 },
            RESTARTED => Reply::Restarted { id: r.u32()?, pid: r.u32()? as i32 },
            RESTART_FAILED => Reply::RestartFailed { id: r.u32()?, errno: r.u32()? as i32, step: r.u8()? },
            NOT_RESTARTED => Reply::NotRestarted { id: r.u32()? },
            _ => return Err(bad("reply tag")),
        };
        r.end()?;
        Ok(reply)
    }
}

fn privileges(w: &mut Writer, p: &Privileges) -> Result<(), TooLong> {
    match p.uid {
        None => w.u8(0)?,
        Some((uid, None)) => {
            w.u8(1)?;
            w.u32(uid)?;
        }
        Some((uid, Some(gid))) => {
            w.u8(2)?;
            w.u32(uid)?;
            w.u32(gid)?;
        }
    }
    w.opt_u32(p.gid)?;
    w.opt_u32(p.nice.map(|n| n as u32))?;
    w.u32(length(p.rlimits.len())?)?;
    for &(resource, soft, hard) in &p.rlimits {
        w.u32(resource)?;
        w.u64(soft)?;
        w.u64(hard)?;
    }
    w.opt_u32(p.umask)
}

fn read_privileges(r: &mut Reader) -> io::Result<Privileges> {
    let uid = match r.u8()? {
        0 => None,
        1 => Some((r.u32()?, None)),
        2 => Some((r.u32()?, Some(r.u32()?))),
        _ => return Err(bad("uid")),
    };
    let gid = r.opt_u32()?;
    let nice = r.opt_u32()?.map(|n| n as i32);
    let count = r.u32()? as usize;
    let mut rlimits = Vec::with_capacity(count.min(16));
    for _ in 0..count {
        rlimits.push((r.u32()?, r.u64()?, r.u64()?));
    }
    let umask = r.opt_u32()?;
    Ok(Privileges { uid, gid, nice, rlimits, umask })
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("spawner protocol: bad {what}"))
}

/// Writes a message's body, never past [`MAX_MESSAGE`]: a request too
/// large fails before it is copied whole.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
    body_start: usize,
}

impl Writer<'_> {
    /// Appends `bytes` if the body stays within [`MAX_MESSAGE`].
    fn put(&mut self, bytes: &[u8]) -> Result<(), TooLong> {
        let body = self.out.len() - self.body_start;
        if bytes.len() > MAX_MESSAGE - body {
            return Err(TooLong);
        }
        self.out.extend_from_slice(bytes);
        Ok(())
    }
    fn u8(&mut self, v: u8) -> Result<(), TooLong> {
        self.put(&[v])
    }
    fn u32(&mut self, v: u32) -> Result<(), TooLong> {
        self.put(&v.to_be_bytes())
    }
    fn u64(&mut self, v: u64) -> Result<(), TooLong> {
        self.put(&v.to_be_bytes())
    }
    fn bytes(&mut self, b: &[u8]) -> Result<(), TooLong> {
        self.u32(length(b.len())?)?;
        self.put(b)
    }
    fn opt_bytes(&mut self, b: Option<&[u8]>) -> Result<(), TooLong> {
        match b {
            None => self.u8(0),
            Some(b) => {
                self.u8(1)?;
                self.bytes(b)
            }
        }
    }
    fn opt_u32(&mut self, v: Option<u32>) -> Result<(), TooLong> {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1)?;
                self.u32(v)
            }
        }
    }
    fn list(&mut self, items: &[Vec<u8>]) -> Result<(), TooLong> {
        self.u32(length(items.len())?)?;
        for item in items {
            self.bytes(item)?;
        }
        Ok(())
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.0.len() < n {
            return Err(bad("length"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> io::Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> io::Result<u64> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn bytes(&mut self) -> io::Result<Vec<u8>> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn opt_bytes(&mut self) -> io::Result<Option<Vec<u8>>> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.bytes().map(Some),
            _ => Err(bad("option")),
        }
    }
    fn opt_u32(&mut self) -> io::Result<Option<u32>> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.u32().map(Some),
            _ => Err(bad("option")),
        }
    }
    fn list(&mut self) -> io::Result<Vec<Vec<u8>>> {
        let n = self.u32()? as usize;
        // Each item takes at least its 4-byte length: a count beyond that is a lie.
        if n > self.0.len() / 4 {
            return Err(bad("list length"));
        }
        (0..n).map(|_| self.bytes()).collect()
    }
    fn end(&self) -> io::Result<()> {
        if self.0.is_empty() { Ok(()) } else { Err(bad("trailing bytes")) }
    }
}

#[cfg(test)]
mod tests;

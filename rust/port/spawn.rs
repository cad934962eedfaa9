//! Starting a program: what to run (path, arguments, environment,
//! directory, stdio, privileges) resolved from its settings, handed to the
//! spawner ([`crate::spawner`]), which starts it in its containment; and
//! [`Child`], portnode's hold on it until it is reaped.

use super::settings::{PortSpec, Program};
use crate::containment::Jail;
use crate::spawner::{self, protocol::Command};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;
use super::child::{Child, Running};
use tokio::net::unix::pipe;

/// A started program and our ends of its pipes.
pub struct Spawned {
    pub child: Child,
    pub jail: Jail,
    pub os_pid: u32,
    /// Non-blocking, and not known to the runtime (see `stdin::Stdin`).
    pub stdin: Option<std::os::fd::OwnedFd>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    /// A terminal's master, for resizing (`stdin` and `stdout` are two more fds of it).
    pub pty: Option<std::os::fd::OwnedFd>,
}

fn bytes(s: &OsStr) -> io::Result<Vec<u8>> {
    let b = s.as_encoded_bytes();
    if b.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(b.to_vec())
}

/// Our end of a program's output pipe, just made, for the runtime: set
/// non-blocking with one `fcntl`, without tokio's checks of what it is
/// (an `fstat` and an `F_GETFL`, for an fd we know).
fn reader(r: std::os::fd::OwnedFd) -> io::Result<pipe::Receiver> {
    spawner::pipes::set_new_pipe_nonblocking(r.as_raw_fd())?;
    pipe::Receiver::from_owned_fd_unchecked(r)
}

/// A program asked of the spawner, not started yet: its pipes (our ends)
/// are made, and the answer is to come ([`Starting::started`]).
pub struct Starting {
    pending: Pending,
    stdin: Option<std::os::fd::OwnedFd>,
    stdout: Option<pipe::Receiver>,
    stderr: Option<pipe::Receiver>,
    pty: Option<std::os::fd::OwnedFd>,
}

/// The spawner's answer to come, and the program's jail. Dropped before the
/// answer is taken (the port was killed while its program was starting),
/// it still stops the program, all of it, once it has started.
struct Pending {
    answer: Option<spawner::client::Starting>,
    jail: Option<Jail>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let (Some(answer), Some(jail)) = (self.answer.take(), self.jail.take()) {
            stop_when_started(answer, jail);
        }
    }
}

/// Stops, as soon as it runs, a program whose port is gone.
fn stop_when_started(answer: spawner::client::Starting, mut jail: Jail) {
    if tokio::runtime::Handle::try_current().is_err() {
        // No runtime left (portnode is exiting): the dropped answer makes
        // the spawner's client kill the program; the watchdog does the rest.
        jail.release();
        return;
    }
    super::child::reapers().spawn(async move {
        match answer.await {
            Ok(Ok(started)) => {
                jail.started(started.pid as u32);
                let child = Child::started(started.pid, started.exit);
                Running::new(child, jail, Duration::ZERO, libc::SIGKILL).terminate(Some(Duration::ZERO)).await;
            }
            _ => jail.release(),
        }
    });
}

/// Asks the spawner for the program `spec` describes, in `jail`, told of
/// its notify socket if it has one: returns at once, with its pipes made.
/// With `after`, the request is a restart grant: the program starts when
/// program `after` exits (see [`spawner::client::arm`]).
/// Errors here are portnode's own (`emfile` for the pipes, a bad
/// argument), as `open_port` raises them; the program's own come from
/// [`Starting::started`].
pub fn start(spec: &PortSpec, mut jail: Jail, notify_socket: Option<&std::path::Path>, after: Option<libc::pid_t>) -> io::Result<Starting> {
    let (path, args): (OsString, Vec<OsString>) = match &spec.program {
        Program::Executable(file) => {
            // Like spawn_executable: the file is not searched for in PATH.
            let path = if file.as_encoded_bytes().contains(&b'/') {
                file.clone()
            } else {
                std::path::Path::new(".").join(file).into_os_string()
            };
            let arg0 = spec.arg0.clone().unwrap_or_else(|| path.clone());
            (path, std::iter::once(arg0).chain(spec.args.iter().cloned()).collect())
        }
        Program::Shell(line) => {
            // As erts does: `/bin/sh -c "exec CMD"`, so a simple command
            // replaces the shell and its pid is the program's.
            let mut script = OsString::from("exec ");
            script.push(line);
            ("/bin/sh".into(), vec!["/bin/sh".into(), "-c".into(), script])
        }
    };
    let command = Command {
        path: bytes(&path)?,
        argv: args.iter().map(|a| bytes(a)).collect::<io::Result<_>>()?,
        envp: environment(spec, jail.marker(), notify_socket)?,
        cwd: working_dir(spec).as_deref().map(bytes).transpose()?,
        stdin: spec.output,
        stdout: spec.input,
        use_stdio: spec.use_stdio,
        stderr: spec.stderr,
        privileges: spec.privileges.clone(),
        in_cgroup: false,
        pty: spec.pty.is_some(),
        join: 0,
        // Every program stays a zombie until portnode has processed its
        // exit and asks for it to be reaped: until then its pid is ours
        // and no other process's, so signalling it is safe (and in
        // process-group mode it is the group's id, which the group needs).
        hold: true,
        // The watchdog names the program's pid, which only its child knows.
        watchdog_pid: spec.lifecycle.watchdog.is_some(),
    };
    // The program's ends go to the spawner, in the order it takes them.
    let mut given = Vec::with_capacity(4);
    let (mut stdin, mut stdout, mut stderr, mut pty) = (None, None, None, None);
    let mut slave = None;
    if let Some(size) = spec.pty {
        let pair = super::pty::open(size, spec.framing)?;
        let (read, write, control) = super::pty::split(pair.master)?;
        (stdin, stdout, pty, slave) = (Some(write), Some(reader(read)?), Some(control), Some(pair.slave));
    }
    let command = Command { stdin: command.stdin && slave.is_none(), stdout: command.stdout && slave.is_none(), ..command };
    if command.stdin {
        let (r, w) = spawner::pipes::pipe_pair()?;
        spawner::pipes::set_new_pipe_nonblocking(w.as_raw_fd())?;
        stdin = Some(w);
        given.push(r);
    }
    if command.stdout {
        let (r, w) = spawner::pipes::pipe_pair()?;
        stdout = Some(reader(r)?);
        given.push(w);
    }
    if command.stderr_pipe() {
        let (r, w) = spawner::pipes::pipe_pair()?;
        stderr = Some(reader(r)?);
        given.push(w);
    }
    let cgroup = jail.take_cgroup_dir();
    let joins = jail.take_joins();
    let command = Command { in_cgroup: cgroup.is_some(), join: joins.len() as u8, ..command };
    given.extend(cgroup);
    given.extend(slave);
    given.extend(joins);
    let asked = match after {
        None => spawner::client::spawn(command, given),
        // The spawner checks the old program's leaf is empty before it starts this one.
        Some(after) => match crate::containment::get().leaf_of(after as u32) {
            Some(old_leaf) => {
                given.push(old_leaf);
                spawner::client::arm(after, command, given)
            }
            None => Err(spawner::client::not_restarted()),
        },
    };
    match asked {
        Ok(answer) => Ok(Starting { pending: Pending { answer: Some(answer), jail: Some(jail) }, stdin, stdout, stderr, pty }),
        Err(e) => {
            jail.release();
            Err(e)
        }
    }
}

impl Starting {
    /// Waits for the spawner's answer: the program runs, or the errno of
    /// why it does not (see [`failed_in_child`]).
    pub async fn started(self) -> io::Result<Spawned> {
        let Starting { mut pending, stdin, stdout, stderr, pty } = self;
        let Some(answer) = pending.answer.as_mut() else { return Err(io::Error::other("started twice")) };
        // Cancelled here, `pending` stops the program once it runs.
        let answer = answer.await;
        pending.answer = None;
        let Some(mut jail) = pending.jail.take() else { return Err(io::Error::other("started twice")) };
        let started = match answer {
            Ok(Ok(started)) => started,
            Ok(Err(e)) => {
                jail.release();
                return Err(e);
            }
            Err(_) => {
                jail.release();
                return Err(io::Error::other("the spawner is gone"));
            }
        };
        let pid = started.pid;
        jail.started(pid as u32);
        let child = Child::started(pid, started.exit);
        Ok(Spawned { child, jail, os_pid: pid as u32, stdin, stdout, stderr, pty })
    }
}

/// portnode's environment with the settings' changes (`None` unsets), the
/// sd_notify variables (`NOTIFY_SOCKET`, `WATCHDOG_USEC`; the spawner adds
/// `WATCHDOG_PID`) and the containment's marker (`NAME=VALUE`) if it has one:
/// portnode's own variables in their order, less those any of these name,
/// then these in the order they apply.
fn environment(spec: &PortSpec, marker: Option<&str>, notify_socket: Option<&std::path::Path>) -> io::Result<Vec<Vec<u8>>> {
    // Names the settings touch, and what survives of what they set.
    let mut touched: Vec<OsString> = Vec::new();
    let mut set: Vec<(OsString, OsString)> = Vec::new();
    let mut apply = |key: OsString, value: Option<OsString>| {
        set.retain(|(k, _)| *k != key);
        if let Some(v) = value {
            set.push((key.clone(), v));
        }
        touched.push(key);
    };
    for (key, value) in &spec.env {
        apply(key.clone(), value.clone());
    }
    // After the settings, so that none can point the program elsewhere.
    if let Some(path) = notify_socket {
        apply("WATCHDOG_PID".into(), None);
        apply("NOTIFY_SOCKET".into(), Some(path.as_os_str().to_owned()));
        apply("WATCHDOG_USEC".into(), spec.lifecycle.watchdog.map(|w| OsString::from(w.as_micros().to_string())));
    }
    // Last, so that no setting can take it away.
    if let Some((name, value)) = marker.and_then(|m| m.split_once('=')) {
        apply(name.into(), Some(value.into()));
    }
    let own = own_environment().iter().filter(|(kv, name)| !touched.iter().any(|t| t.as_encoded_bytes() == &kv[..*name])).map(|(kv, _)| Ok(kv.clone()));
    let set = set.into_iter().map(|(k, v)| {
        let mut kv = k;
        kv.push("=");
        kv.push(v);
        bytes(&kv)
    });
    own.chain(set).collect()
}

/// portnode's own environment, as `NAME=VALUE` entries and each name's
/// length, read once: nothing changes it once the runtime runs (the
/// cookie's variable is removed before), and reading it at each start
/// cost a restart about a sixth of its open (perf, `bench/run restart`).
fn own_environment() -> &'static [(Vec<u8>, usize)] {
    static OWN: std::sync::OnceLock<Vec<(Vec<u8>, usize)>> = std::sync::OnceLock::new();
    OWN.get_or_init(|| {
        std::env::vars_os()
            .filter_map(|(k, v)| {
                let name = k.len();
                let mut kv = k;
                kv.push("=");
                kv.push(v);
                bytes(&kv).ok().map(|kv| (kv, name))
            })
            .collect()
    })
}

/// Where the program starts: its `cd`, resolved against the caller's
/// directory when relative; else the caller's directory, if it sent one.
fn working_dir(spec: &PortSpec) -> Option<OsString> {
    match (&spec.cd, &spec.caller_cwd) {
        (Some(cd), Some(base)) => Some(std::path::Path::new(base).join(cd).into_os_string()),
        (cd, base) => cd.clone().or_else(|| base.clone()),
    }
}

/// The checks erts makes before it starts an executable: it must exist
/// (`enoent`) and be executable by us (`eacces`). Later failures (a
/// directory, a script without `#!`) only show in the exit status.
pub fn precheck(spec: &PortSpec) -> io::Result<()> {
    let Program::Executable(file) = &spec.program else { return Ok(()) };
    // erts checks in the VM, so against the VM's directory (not the `cd`).
    let file = match &spec.caller_cwd {
        Some(base) => std::path::Path::new(base).join(file).into_os_string(),
        None => file.clone(),
    };
    let path = std::ffi::CString::new(file.as_encoded_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::ENOENT))?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::access(path.as_ptr(), libc::X_OK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// True for errors the program's own start reports (exec, chdir), which erts
/// reports as the exit status rather than from open_port (E2BIG too: an
/// environment or arguments too large open the port, which exits with 7).
pub fn failed_in_child(e: &io::Error) -> Option<i32> {
    match crate::program::step::errno_of(e) {
        Some(n @ (libc::EACCES | libc::ENOEXEC | libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EISDIR | libc::E2BIG)) => Some(n),
        _ => None,
    }
}

/// The POSIX name of an errno, as Erlang reports it (`enoent`, `eacces`, ...).
pub fn errno_name(e: &io::Error) -> &'static str {
    match crate::program::step::errno_of(e) {
        Some(libc::ENOENT) => "enoent",
        Some(libc::EACCES) => "eacces",
        Some(libc::ENOTDIR) => "enotdir",
        Some(libc::ENOEXEC) => "enoexec",
        Some(libc::ENOMEM) => "enomem",
        Some(libc::EMFILE) => "emfile",
        Some(libc::ENFILE) => "enfile",
        Some(libc::E2BIG) => "e2big",
        Some(libc::ELOOP) => "eloop",
        Some(libc::ENAMETOOLONG) => "enametoolong",
        Some(libc::EAGAIN) => "eagain",
        Some(libc::EPERM) => "eperm",
        Some(libc::EISDIR) => "eisdir",
        _ => "einval",
    }
}

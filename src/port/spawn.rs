//! Starting a program: its own process group, a parent-death signal, pipes
//! for the stdio the settings ask for, and nothing else inherited.

use super::settings::{PortSpec, Program, Stderr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::Stdio;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};

/// A started program and our ends of its pipes.
pub struct Spawned {
    pub child: Child,
    pub os_pid: u32,
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

/// A pipe as (read end, write end), both close-on-exec.
fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two fds on success; each is owned exactly once below.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are not owned elsewhere.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Starts the program `spec` describes. Must run on a thread that lives as
/// long as the node: Linux sends the parent-death signal when the thread
/// that forked exits.
pub fn spawn(spec: &PortSpec) -> io::Result<Spawned> {
    let mut cmd = match &spec.program {
        Program::Executable(file) => {
            // Like spawn_executable: the file is not searched for in PATH.
            let path = if file.as_encoded_bytes().contains(&b'/') {
                std::path::PathBuf::from(file)
            } else {
                std::path::Path::new(".").join(file)
            };
            let mut c = Command::new(path);
            c.args(&spec.args);
            if let Some(arg0) = &spec.arg0 {
                c.arg0(arg0);
            }
            c
        }
        Program::Shell(line) => {
            // As erts does: `/bin/sh -c "exec CMD"`, so a simple command
            // replaces the shell and its pid is the program's.
            let mut script = std::ffi::OsString::from("exec ");
            script.push(line);
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(script);
            c
        }
    };
    for (key, value) in &spec.env {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    if let Some(dir) = &spec.cd {
        cmd.current_dir(dir);
    }
    cmd.process_group(0).kill_on_drop(false);

    let (mut stdin, mut stdout, mut stderr) = (None, None, None);
    let mut child_fds: Vec<OwnedFd> = Vec::new();
    let mut to_child: Option<RawFd> = None;
    let mut from_child: Option<RawFd> = None;
    if spec.output {
        let (r, w) = pipe_pair()?;
        to_child = Some(r.as_raw_fd());
        child_fds.push(r);
        stdin = Some(pipe::Sender::from_owned_fd(w)?);
    }
    let mut out_w: Option<OwnedFd> = None;
    if spec.input {
        let (r, w) = pipe_pair()?;
        from_child = Some(w.as_raw_fd());
        out_w = Some(w);
        stdout = Some(pipe::Receiver::from_owned_fd(r)?);
    }
    if spec.use_stdio {
        cmd.stdin(child_fds.pop().map(Stdio::from).unwrap_or_else(Stdio::null));
        match (&out_w, spec.stderr) {
            (Some(w), Stderr::ToStdout) => {
                cmd.stderr(Stdio::from(w.try_clone()?));
            }
            (_, Stderr::Message) => {
                let (r, w) = pipe_pair()?;
                cmd.stderr(Stdio::from(w));
                stderr = Some(pipe::Receiver::from_owned_fd(r)?);
            }
            _ => {
                cmd.stderr(Stdio::inherit());
            }
        }
        cmd.stdout(out_w.take().map(Stdio::from).unwrap_or_else(Stdio::null));
        to_child = None;
        from_child = None;
    } else {
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        if let Some(w) = out_w.take() {
            child_fds.push(w);
        }
    }

    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure only makes async-signal-safe calls (prctl, getppid,
    // fcntl, dup2, _exit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // portnode may have died before the death signal was armed.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            // nouse_stdio: the program reads fd 3 and writes fd 4. Move the
            // pipe ends out of the way first so that neither is clobbered.
            let high: Vec<(RawFd, RawFd)> = [(to_child, 3), (from_child, 4)]
                .into_iter()
                .filter_map(|(fd, target)| fd.map(|fd| (libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10), target)))
                .collect();
            for (fd, target) in high {
                if fd < 0 || libc::dup2(fd, target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(cmd); // closes the child's ends of the pipes in this process
    drop(child_fds);
    let os_pid = child.id().unwrap_or(0);
    Ok(Spawned { child, os_pid, stdin, stdout, stderr })
}

/// Returns freed heap memory to the kernel, at most once a second. fork()
/// copies the page tables of everything mapped, so memory glibc keeps after
/// thousands of ports have closed made every later spawn slower (measured:
/// 1.2 ms fresh, 4.7 ms after 5000 programs opened and closed; 1.8 ms with this).
pub fn trim_heap() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    if LAST.swap(now, Ordering::Relaxed) != now {
        // SAFETY: malloc_trim only hands free heap pages back to the kernel.
        unsafe { libc::malloc_trim(0) };
    }
}

/// The checks erts makes before it starts an executable: it must exist
/// (`enoent`) and be executable by us (`eacces`). Later failures (a
/// directory, a script without `#!`) only show in the exit status.
pub fn precheck(spec: &PortSpec) -> io::Result<()> {
    let Program::Executable(file) = &spec.program else { return Ok(()) };
    let path = std::ffi::CString::new(file.as_encoded_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::ENOENT))?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::access(path.as_ptr(), libc::X_OK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// True for errors the program's own start reports (exec, chdir), which erts
/// reports as the exit status rather than from open_port.
pub fn failed_in_child(e: &io::Error) -> Option<i32> {
    match e.raw_os_error() {
        Some(n @ (libc::EACCES | libc::ENOEXEC | libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EISDIR)) => Some(n),
        _ => None,
    }
}

/// The POSIX name of an errno, as Erlang reports it (`enoent`, `eacces`, ...).
pub fn errno_name(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
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

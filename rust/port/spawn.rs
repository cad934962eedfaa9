//! Starting a program: its own process group, its containment (it joins
//! its leaf cgroup before exec, or carries its marker), a parent-death
//! signal, pipes for the stdio the settings ask for, and nothing else
//! inherited.
//!
//! The program is started the way `posix_spawn` starts one: `clone` with
//! `CLONE_VM | CLONE_VFORK`, so the child shares portnode's memory until it
//! execs and no page table is copied. A fork would copy them, and then make
//! portnode take a copy-on-write fault for every page it touches while the
//! child has not exec'd yet: the cost of a spawn would grow with portnode's
//! size. Everything the child needs is prepared before the clone; between
//! clone and exec it makes only system calls, and never allocates.
//! (`posix_spawn` itself cannot arm the parent-death signal.)

use super::settings::{PortSpec, Program, Stderr};
use crate::containment::{tree, Jail};
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

/// A started program and our ends of its pipes.
pub struct Spawned {
    pub child: Child,
    pub jail: Jail,
    pub os_pid: u32,
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

/// A program we started and have not reaped yet. Its exit is observed
/// without reaping it ([`Child::exited`]), so that its pid (and, as a group
/// leader, its pgid) cannot be reused while we may still signal it;
/// [`Child::reap`] ends that. Dropping an unreaped child kills and reaps it.
pub struct Child {
    pid: libc::pid_t,
    /// Readable once the program has exited (Linux 5.3 and later).
    exited: AsyncFd<OwnedFd>,
    status: Option<ExitStatus>,
    reaped: bool,
}

impl Child {
    /// Waits for the program to exit, without reaping it. Cancel-safe.
    pub async fn exited(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_exited()? {
                return Ok(status);
            }
            self.exited.readable().await?.clear_ready();
        }
    }

    /// The exit status, if the program has exited (it stays unreaped).
    pub fn try_exited(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            // SAFETY: waitid on our own unreaped child, with a zeroed siginfo.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
            if unsafe { libc::waitid(libc::P_PID, self.pid as libc::id_t, &mut info, flags) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: waitid filled in the child fields, or left si_pid 0.
            let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
            if pid == 0 {
                return Ok(None);
            }
            self.status = Some(ExitStatus::from_raw(match info.si_code {
                libc::CLD_EXITED => (status & 0xff) << 8,
                libc::CLD_DUMPED => (status & 0x7f) | 0x80,
                _ => status & 0x7f,
            }));
        }
        Ok(self.status)
    }

    /// Reaps the program, which must have exited (or been sent SIGKILL).
    pub fn reap(&mut self) {
        if !self.reaped {
            let mut raw = 0;
            // SAFETY: waitpid on our own unreaped child.
            unsafe { libc::waitpid(self.pid, &mut raw, 0) };
            self.reaped = true;
            tree::untrack(self.pid);
        }
    }

    /// Sends `signal` to the program's first process only.
    pub fn signal(&self, signal: i32) -> bool {
        // SAFETY: kill(2) on our own unreaped child: the pid is still ours.
        !self.reaped && unsafe { libc::kill(self.pid, signal) == 0 }
    }

    /// The program's pid (and process group id).
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            self.signal(libc::SIGKILL);
            self.reap();
        }
    }
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

/// /dev/null, close-on-exec, for the stdio a program is not given a pipe for.
fn dev_null() -> io::Result<OwnedFd> {
    Ok(std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?.into())
}

fn c_string(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// What the child does between clone and exec, all of it prepared before.
struct Plan {
    path: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: Option<CString>,
    /// The fd that becomes fd 0, 1, 2, 3, 4 in the program (-1: leave it).
    stdio: [RawFd; 5],
    /// `cgroup.procs` of the program's leaf cgroup, which the child joins
    /// before exec (-1: none, or the child was cloned into its cgroup).
    cgroup_procs: RawFd,
    /// portnode's pid: the child checks that its death signal was armed in time.
    parent: libc::pid_t,
    /// User, group, nice, limits, umask: applied just before exec.
    privileges: super::privileges::Privileges,
    /// Set by the child when it fails before exec.
    errno: AtomicI32,
}

/// The child, between clone and exec. It shares portnode's memory and its
/// thread's TLS (as `posix_spawn`'s child does), while portnode's thread is
/// suspended: only system calls here, no allocation, no locks.
extern "C" fn child_main(plan: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `plan` points to the Plan that `start` keeps alive until the
    // child has exec'd or exited (CLONE_VFORK suspends it until then).
    let plan = unsafe { &*(plan as *const Plan) };
    /// Tells the parent why, and ends the child without running anything of portnode's.
    fn fail(plan: &Plan) -> ! {
        plan.errno.store(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL), Ordering::Relaxed);
        // SAFETY: _exit only ends this child.
        unsafe { libc::_exit(127) }
    }
    // SAFETY: plain system calls on values prepared by the parent.
    unsafe {
        // portnode's signal handlers must not run here, and the program
        // starts with default dispositions and nothing blocked.
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for signal in 1..=libc::SIGRTMAX() {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());

        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
            fail(plan);
        }
        // portnode may have died before the death signal was armed.
        if libc::getppid() != plan.parent {
            libc::_exit(1);
        }
        if libc::setpgid(0, 0) != 0 {
            fail(plan);
        }
        // Into the program's cgroup before anything of the program runs:
        // whatever it starts later (setsid, double forks) starts inside.
        if plan.cgroup_procs >= 0 && libc::write(plan.cgroup_procs, b"0".as_ptr().cast(), 1) != 1 {
            fail(plan);
        }
        // Move every source above the targets first, so that none is
        // clobbered, then put each in place (dup2 clears close-on-exec).
        let mut high = [-1; 5];
        for (target, &fd) in plan.stdio.iter().enumerate() {
            if fd >= 0 {
                high[target] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                if high[target] < 0 {
                    fail(plan);
                }
            }
        }
        for (target, &fd) in high.iter().enumerate() {
            if fd >= 0 && libc::dup2(fd, target as RawFd) < 0 {
                fail(plan);
            }
        }
        if plan.privileges.apply().is_err() {
            fail(plan);
        }
        if let Some(dir) = &plan.cwd {
            if libc::chdir(dir.as_ptr()) != 0 {
                fail(plan);
            }
        }
        libc::execve(plan.path.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
        fail(plan)
    }
}

/// Starts the program `spec` describes. Must run on a thread that lives as
/// long as the node: Linux sends the parent-death signal when the thread
/// that forked exits.
pub fn spawn(spec: &PortSpec, mut jail: Jail) -> io::Result<Spawned> {
    let (path, mut args): (OsString, Vec<OsString>) = match &spec.program {
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
    let argv: Vec<CString> = args.drain(..).map(|a| c_string(&a)).collect::<io::Result<_>>()?;
    let envp = environment(spec, jail.marker())?;
    let cwd = working_dir(spec).as_deref().map(c_string).transpose()?;

    // The program's stdio: [stdin, stdout, stderr, fd 3, fd 4].
    let mut stdio: [Option<OwnedFd>; 5] = Default::default();
    let (mut stdin, mut stdout, mut stderr) = (None, None, None);
    let to_child = if spec.output {
        let (r, w) = pipe_pair()?;
        stdin = Some(pipe::Sender::from_owned_fd(w)?);
        Some(r)
    } else {
        None
    };
    let from_child = if spec.input {
        let (r, w) = pipe_pair()?;
        stdout = Some(pipe::Receiver::from_owned_fd(r)?);
        Some(w)
    } else {
        None
    };
    let null = || dev_null();
    if spec.use_stdio {
        stdio[2] = match (&from_child, spec.stderr) {
            (Some(w), Stderr::ToStdout) => Some(w.try_clone()?),
            (_, Stderr::Message) => {
                let (r, w) = pipe_pair()?;
                stderr = Some(pipe::Receiver::from_owned_fd(r)?);
                Some(w)
            }
            _ => None,
        };
        stdio[0] = Some(match to_child {
            Some(r) => r,
            None => null()?,
        });
        stdio[1] = Some(match from_child {
            Some(w) => w,
            None => null()?,
        });
    } else {
        // nouse_stdio: the program reads fd 3 and writes fd 4.
        let null = null()?;
        stdio[0] = Some(null.try_clone()?);
        stdio[1] = Some(null);
        stdio[3] = to_child;
        stdio[4] = from_child;
    }

    let mut plan = Plan {
        path: c_string(&path)?,
        argv: argv.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect(),
        envp: envp.iter().map(|e| e.as_ptr()).chain(std::iter::once(std::ptr::null())).collect(),
        cwd,
        stdio: std::array::from_fn(|i| stdio[i].as_ref().map_or(-1, |fd| fd.as_raw_fd())),
        cgroup_procs: -1,
        parent: std::process::id() as libc::pid_t,
        privileges: spec.privileges.clone(),
        errno: AtomicI32::new(0),
    };
    let mut procs = None; // cgroup.procs, when the child must join by writing to it
    let pid = match jail.cgroup_fd() {
        Some(cgroup) => match start_in_cgroup(&plan, cgroup) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)) => {
                // No clone3 with CLONE_INTO_CGROUP (Linux < 5.7): join before exec.
                let file = open_procs(cgroup)?;
                plan.cgroup_procs = file.as_raw_fd();
                procs = Some(file);
                start(&plan)
            }
            other => other,
        },
        None => start(&plan),
    }?;
    drop(procs);
    tree::track(pid);
    jail.started(pid as u32);
    drop(stdio); // the child's ends of the pipes, in this process
    let errno = plan.errno.load(Ordering::Relaxed);
    let exited = if errno != 0 { Err(io::Error::from_raw_os_error(errno)) } else { pidfd(pid) };
    let exited = match exited {
        Ok(fd) => fd,
        Err(e) => {
            // SAFETY: our own child, not yet reaped (it has failed, or is killed here).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            reap_now(pid);
            tree::untrack(pid);
            jail.release();
            return Err(e);
        }
    };
    let child = Child { pid, exited, status: None, reaped: false };
    Ok(Spawned { child, jail, os_pid: pid as u32, stdin, stdout, stderr })
}

/// portnode's environment with the settings' changes (`None` unsets), and
/// the containment's marker (`NAME=VALUE`) if it has one.
fn environment(spec: &PortSpec, marker: Option<&str>) -> io::Result<Vec<CString>> {
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    for (key, value) in &spec.env {
        vars.retain(|(k, _)| k != key);
        if let Some(v) = value {
            vars.push((key.clone(), v.clone()));
        }
    }
    // Last, so that no setting can take it away.
    if let Some((name, value)) = marker.and_then(|m| m.split_once('=')) {
        vars.retain(|(k, _)| k != name);
        vars.push((name.into(), value.into()));
    }
    vars.into_iter()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            c_string(&kv)
        })
        .collect()
}

/// Where the program starts: its `cd`, resolved against the caller's
/// directory when relative; else the caller's directory, if it sent one.
fn working_dir(spec: &PortSpec) -> Option<OsString> {
    match (&spec.cd, &spec.caller_cwd) {
        (Some(cd), Some(base)) => Some(std::path::Path::new(base).join(cd).into_os_string()),
        (cd, base) => cd.clone().or_else(|| base.clone()),
    }
}

/// Clones the child and returns its pid once it has exec'd or failed.
fn start(plan: &Plan) -> io::Result<libc::pid_t> {
    const STACK: usize = 64 * 1024;
    let mut stack = vec![0u8; STACK];
    // SAFETY: the stack outlives the child's use of it (CLONE_VFORK returns
    // only after exec or exit); its top is 16-byte aligned as the ABI wants.
    // All signals are blocked around the clone so that no handler of
    // portnode's runs in the child before it has reset them.
    unsafe {
        let top = stack.as_mut_ptr().add(STACK);
        let top = top.sub(top as usize % 16) as *mut libc::c_void;
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(child_main, top, libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD, plan as *const Plan as *mut libc::c_void);
        let error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 { Err(error) } else { Ok(pid) }
    }
}

/// `cgroup.procs` of the cgroup whose directory is `dir`, for writing.
fn open_procs(dir: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: openat with a valid directory fd and a NUL-terminated name.
    let fd = unsafe { libc::openat(dir, c"cgroup.procs".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `clone3`'s arguments (linux/sched.h, version 2: with `cgroup`).
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Clones the child straight into the cgroup whose directory is `cgroup`
/// (`clone3` with `CLONE_INTO_CGROUP`, as `start` otherwise): it never runs
/// outside it, and nothing is migrated. Migrating a process by writing
/// `cgroup.procs` waits for an RCU grace period (milliseconds); starting it
/// in place costs next to nothing.
#[cfg(target_arch = "x86_64")]
fn start_in_cgroup(plan: &Plan, cgroup: RawFd) -> io::Result<libc::pid_t> {
    const STACK: usize = 64 * 1024;
    // 16-byte aligned, as the ABI wants the stack to be.
    let mut stack = vec![0u128; STACK / 16];
    let args = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.as_mut_ptr() as u64,
        stack_size: STACK as u64,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup as u64,
    };
    let ret: i64;
    // SAFETY: as in `start`: the child shares our memory on its own stack
    // (which outlives it: CLONE_VFORK returns only after it has exec'd or
    // exited) and runs `child_main`, which makes only system calls and
    // never returns into this frame: on its return the child exits. In the
    // child, every register but rax, rcx, r11 and rsp is as it was at the
    // syscall, so r12 still holds the plan. Signals are blocked around the
    // clone, as in `start`.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r12",
            "call {entry}",
            "mov edi, eax",
            "mov eax, 60",
            "syscall",
            "ud2",
            "2:",
            entry = sym child_main,
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") &args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") plan as *const Plan,
            lateout("rcx") _,
            lateout("r11") _,
        );
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    drop(stack);
    if ret < 0 { Err(io::Error::from_raw_os_error(-ret as i32)) } else { Ok(ret as libc::pid_t) }
}

/// Elsewhere than x86_64: no clone3 here, the child joins by writing `cgroup.procs`.
#[cfg(not(target_arch = "x86_64"))]
fn start_in_cgroup(_plan: &Plan, _cgroup: RawFd) -> io::Result<libc::pid_t> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// A pidfd for our child: readable once it has exited.
fn pidfd(pid: libc::pid_t) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: pidfd_open returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("pidfd_open (portnode needs Linux 5.3 or later): {e}")));
    }
    // SAFETY: a new fd, owned here only; the AsyncFd owns it from here on and
    // nothing else closes or replaces it.
    unsafe {
        let fd = OwnedFd::from_raw_fd(fd as RawFd);
        AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE).map_err(|e| e.into())
    }
}

/// Reaps a child that has exited or is about to (it failed before exec, or was killed).
fn reap_now(pid: libc::pid_t) {
    let mut raw = 0;
    // SAFETY: waitpid on our own child.
    unsafe { libc::waitpid(pid, &mut raw, 0) };
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
    match e.raw_os_error() {
        Some(n @ (libc::EACCES | libc::ENOEXEC | libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EISDIR | libc::E2BIG)) => Some(n),
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

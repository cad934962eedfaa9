//! Starting one program, in the spawner: pipes for the stdio it asks for,
//! then `clone` and `exec`, into its cgroup when it has one.
//!
//! The program is started much as `posix_spawn` starts one: `clone` with
//! `CLONE_VM`, so the child shares the spawner's memory until it execs and
//! no page table is copied. Everything the child needs is prepared before
//! the clone, in memory of its own ([`Starting`]); between clone and exec
//! it makes only system calls, without libc's wrappers (see
//! [`crate::program::syscall`]), and never allocates. (`posix_spawn` itself
//! cannot arm the parent-death signal.) The spawner holds no fd of any
//! running program (only those of the restart grants armed, a bounded
//! number), so the fd table each clone copies and each exec closes stays
//! small however many programs run.
//!
//! Unlike `posix_spawn`, the spawner does not wait for the exec
//! (`CLONE_VFORK`): it goes on with the next request while the child
//! execs, and hears that it has from a close-on-exec pipe whose other end
//! only the child holds ([`Starting::done`]; for a restart grant's child,
//! also the children cloned while the grant waited, until they exec: see
//! [`Prepared`]). A spawner that waited kept
//! the cores idle while it and its child took turns on one of them (see
//! docs/performance.md, issue 22's twelfth round). The child's memory is
//! freed, and its stack reused, only once that pipe is closed: by the
//! exec, after the child has left the spawner's memory, or by its exit,
//! likewise.

use super::pid_var::PidVar;
use super::protocol::Command;
use crate::program::Privileges;
use crate::program::Stderr;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, Ordering};
use crate::program::Step;
use super::pipes::dev_null;

/// Signals whose disposition in this process is not the default, as
/// [`note_signal_dispositions`] found them: the only ones a child resets
/// before exec (exec resets caught signals itself, but not ignored ones).
/// Until noted, a child resets every signal.
static NOT_DEFAULT: [AtomicBool; 65] = [const { AtomicBool::new(false) }; 65];
static NOTED: AtomicBool = AtomicBool::new(false);

/// The kernel's `struct sigaction` (x86_64 and aarch64 layout): handler,
/// flags, restorer, mask. All zero is SIG_DFL with nothing masked.
type KernelSigaction = [u64; 4];

/// The kernel's own `rt_sigaction`, not libc's: libc refuses the signals
/// it keeps for itself (32 and 33 in glibc), and a program must not start
/// with those ignored either.
///
/// # Safety
/// `new` and `old` are null or point to a `KernelSigaction`.
unsafe fn rt_sigaction(signal: libc::c_int, new: *const KernelSigaction, old: *mut KernelSigaction) -> libc::c_long {
    unsafe { libc::syscall(libc::SYS_rt_sigaction, signal, new, old, 8usize) }
}

/// Notes which signals do not have their default disposition here. The
/// spawner calls it once it has set its own, and changes none after: a
/// child then makes a handful of `sigaction` calls, not one per signal
/// (64 of its ~80 system calls before exec).
pub fn note_signal_dispositions() {
    for signal in 1..=64 {
        let mut old: KernelSigaction = [0; 4];
        // SAFETY: no new action: this only reads the current one.
        let read = unsafe { rt_sigaction(signal, std::ptr::null(), &mut old) } == 0;
        let default = read && old[0] == libc::SIG_DFL as u64;
        NOT_DEFAULT[signal as usize].store(!default, Ordering::Relaxed);
    }
    NOTED.store(true, Ordering::Release);
}

/// The program's ends of its pipes, and its cgroup, as portnode sent them.
#[derive(Default)]
pub struct Given {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    pub cgroup: Option<OwnedFd>,
    /// A terminal's slave, for stdin, stdout and (but for a stderr pipe) stderr.
    pub pty: Option<OwnedFd>,
    /// `cgroup.procs` of the program's v1 cgroups, to join before exec.
    pub join: Vec<OwnedFd>,
}

fn c_string(s: &[u8]) -> Result<CString, i32> {
    CString::new(s).map_err(|_| libc::EINVAL)
}

fn errno(e: io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EINVAL)
}

/// Why a program did not start: the errno, and the step of the child that
/// failed (`None`: the spawner failed, before or at the clone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub errno: i32,
    pub step: Option<Step>,
}

impl From<i32> for Failure {
    fn from(errno: i32) -> Failure {
        Failure { errno, step: None }
    }
}

/// A program cloned and not yet known to have exec'd: its pid, the pipe
/// that says when it has exec'd or exited, and what it reads meanwhile.
pub struct Starting {
    pub pid: libc::pid_t,
    /// Closed by the child's exec or exit (readable, at end of file, then).
    done: OwnedFd,
    /// A leaked `Box`, taken back once the child is done with it: while the
    /// child runs, the spawner holds no reference into it (the child writes
    /// its errno, step and `WATCHDOG_PID` there).
    memory: Option<NonNull<ChildMemory>>,
}

/// What a child reads between clone and exec, in the spawner's memory.
struct ChildMemory {
    plan: Plan,
    stack: Stack,
    // What `plan` points into.
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    _watchdog_pid: Option<PidVar>,
}

/// A child's stack: 64 KiB, 16-byte aligned as the ABI wants it, above a
/// page that faults (the child runs beside the spawner, whose memory an
/// overflow would otherwise overwrite).
struct Stack {
    base: NonNull<libc::c_void>,
}

const STACK: usize = 64 * 1024;
const GUARD: usize = 4096;

impl Stack {
    fn new() -> io::Result<Stack> {
        // SAFETY: a new private anonymous mapping; its first page made inaccessible.
        unsafe {
            let base = libc::mmap(std::ptr::null_mut(), GUARD + STACK, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK, -1, 0);
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let stack = Stack { base: NonNull::new_unchecked(base) };
            if libc::mprotect(base, GUARD, libc::PROT_NONE) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(stack)
        }
    }

    /// The lowest address the child may use.
    fn bottom(&self) -> *mut u8 {
        // SAFETY: within the mapping.
        unsafe { self.base.as_ptr().cast::<u8>().add(GUARD) }
    }

    /// Where the stack starts (it grows down).
    fn top(&self) -> *mut u8 {
        // SAFETY: the end of the mapping.
        unsafe { self.bottom().add(STACK) }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, which no child uses any more.
        unsafe { libc::munmap(self.base.as_ptr(), GUARD + STACK) };
    }
}

/// Stacks of children that have exec'd, for the next ones: a new stack is
/// a mapping to make and fault in.
static STACKS: std::sync::Mutex<Vec<Stack>> = std::sync::Mutex::new(Vec::new());
const STACKS_KEPT: usize = 32;

// SAFETY: a stack in the pool is used by no child; the spawner has one thread.
unsafe impl Send for Stack {}

fn pooled_stack() -> io::Result<Stack> {
    match STACKS.lock().unwrap_or_else(|e| e.into_inner()).pop() {
        Some(stack) => Ok(stack),
        None => Stack::new(),
    }
}

impl Starting {
    /// The fd to poll: readable once the child has exec'd or exited.
    pub fn done_fd(&self) -> RawFd {
        self.done.as_raw_fd()
    }

    /// True once the child has exec'd or exited (its end of the pipe is closed).
    pub fn is_done(&self) -> bool {
        let mut poll = libc::pollfd { fd: self.done.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: poll of one fd of ours, without waiting.
        unsafe { libc::poll(&mut poll, 1, 0) == 1 }
    }

    /// How it went, once [`Starting::is_done`]: its pid if it exec'd, or
    /// why not (it failed before exec: it is reaped here).
    pub fn finish(mut self) -> Result<libc::pid_t, Failure> {
        let raw = self.memory.take().expect("finished once");
        // SAFETY: the leaked Box of `Prepared::start`; the child is done with it.
        let memory = unsafe { Box::from_raw(raw.as_ptr()) };
        let (errno, step) = (memory.plan.errno.load(Ordering::Acquire), memory.plan.step.load(Ordering::Acquire));
        let ChildMemory { stack, .. } = *memory;
        let mut stacks = STACKS.lock().unwrap_or_else(|e| e.into_inner());
        if stacks.len() < STACKS_KEPT {
            stacks.push(stack);
        }
        drop(stacks);
        match errno {
            0 => Ok(self.pid),
            e => {
                // The child has exited (it failed before exec): reap it.
                reap(self.pid);
                Err(Failure { errno: e, step: Step::from_u8(step) })
            }
        }
    }
}

impl Drop for Starting {
    /// Unfinished (the spawner is ending): the memory is freed only if the
    /// child is done with it, else left to the spawner's exit.
    fn drop(&mut self) {
        if let Some(raw) = self.memory.take().filter(|_| self.is_done()) {
            // SAFETY: the leaked Box of `Prepared::start`; the child is done with it.
            drop(unsafe { Box::from_raw(raw.as_ptr()) });
        }
    }
}

/// Starts `command` with the fds portnode gave, in its cgroup if given:
/// clones its child, which execs on its own (see [`Starting`]). Or why
/// not, from the spawner (before or at the clone).
pub fn start_command(command: &Command, given: Given) -> Result<Starting, Failure> {
    prepare(command, given)?.start()
}

/// A program ready to be cloned: what [`start_command`] makes before the
/// clone (its strings, its plan, its stdio in place, its exec pipe), made
/// ahead for a restart grant, so that little more than the clone is left
/// for the restart. Only its stack is taken at the clone, so that no idle
/// grant holds one.
///
/// The exec pipe's write end, close-on-exec, is copied into every child
/// cloned while the grant waits, until that child execs or exits. So its
/// end of file still means that this program's child has exec'd or
/// exited (it may come later, never earlier); and answers go in the order
/// of the starts, so this child's answer waited for those earlier children
/// anyway.
pub struct Prepared {
    plan: Plan,
    // What `plan` points into: heap memory and fds that stay where they
    // are when a `Prepared` moves.
    argv: Vec<CString>,
    envp: Vec<CString>,
    watchdog_pid: Option<PidVar>,
    stdio: [Option<OwnedFd>; 5],
    cgroup: Option<OwnedFd>,
    join: Vec<OwnedFd>,
    done: OwnedFd,
    done_write: OwnedFd,
}

/// Prepares `command` with the fds portnode gave (see [`Prepared`]).
pub fn prepare(command: &Command, given: Given) -> Result<Prepared, Failure> {
    let path = c_string(&command.path)?;
    let argv: Vec<CString> = command.argv.iter().map(|a| c_string(a)).collect::<Result<_, _>>()?;
    let envp: Vec<CString> = command.envp.iter().map(|e| c_string(e)).collect::<Result<_, _>>()?;
    let cwd = command.cwd.as_deref().map(c_string).transpose()?;
    let Given { stdin: to_child, stdout: from_child, stderr, cgroup, pty, join } = given;
    let session = pty.is_some();
    let joins: [RawFd; 3] = match join.len() {
        0..=3 => std::array::from_fn(|i| join.get(i).map_or(-1, |fd| fd.as_raw_fd())),
        _ => return Err(Failure::from(libc::EINVAL)),
    };

    // The program's stdio: [stdin, stdout, stderr, fd 3, fd 4].
    let mut stdio: [Option<OwnedFd>; 5] = Default::default();
    if let Some(tty) = pty {
        stdio[2] = match stderr {
            Some(pipe) => Some(pipe),
            None => Some(tty.try_clone().map_err(errno)?),
        };
        stdio[0] = Some(tty.try_clone().map_err(errno)?);
        stdio[1] = Some(tty);
    } else if command.use_stdio {
        stdio[2] = match (&from_child, command.stderr) {
            (Some(w), Stderr::ToStdout) => Some(w.try_clone().map_err(errno)?),
            // `out` with `stderr_to_stdout`: where stdout goes.
            (None, Stderr::ToStdout) => Some(dev_null().map_err(errno)?),
            (_, Stderr::Message | Stderr::Log) => stderr,
        };
        stdio[0] = Some(match to_child {
            Some(r) => r,
            None => dev_null().map_err(errno)?,
        });
        stdio[1] = Some(match from_child {
            Some(w) => w,
            None => dev_null().map_err(errno)?,
        });
    } else {
        // nouse_stdio: the program reads fd 3 and writes fd 4.
        let null = dev_null().map_err(errno)?;
        stdio[0] = Some(null.try_clone().map_err(errno)?);
        stdio[1] = Some(null);
        stdio[2] = stderr;
        stdio[3] = to_child;
        stdio[4] = from_child;
    }
    // The pipe that says when the child has exec'd: its write end in the
    // child above the fds it puts in place (0 to 4), which would close it.
    let (done, done_write) = done_pipe().map_err(errno)?;

    let mut watchdog_pid = command.watchdog_pid.then(PidVar::watchdog);
    let mut plan = Plan {
        path,
        argv: argv.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect(),
        envp: envp.iter().map(|e| e.as_ptr()).collect(),
        watchdog_pid_var: std::ptr::null_mut(),
        cwd,
        stdio: std::array::from_fn(|i| stdio[i].as_ref().map_or(-1, |fd| fd.as_raw_fd())),
        cgroup_procs: -1,
        joins,
        session,
        // SAFETY: getpid cannot fail.
        parent: unsafe { libc::getpid() },
        privileges: command.privileges.clone(),
        errno: AtomicI32::new(0),
        step: AtomicU8::new(0),
    };
    // `WATCHDOG_PID=`, in its own heap memory: the child writes its pid there.
    if let Some(var) = watchdog_pid.as_mut().map(PidVar::as_mut_ptr) {
        plan.watchdog_pid_var = var;
        plan.envp.push(var.cast_const().cast());
    }
    plan.envp.push(std::ptr::null());
    Ok(Prepared { plan, argv, envp, watchdog_pid, stdio, cgroup, join, done, done_write })
}

impl Prepared {
    /// Clones the child, which execs on its own (see [`Starting`]); or why
    /// not, from the spawner (at the clone).
    pub fn start(self) -> Result<Starting, Failure> {
        let Prepared { plan, argv, envp, watchdog_pid, stdio, cgroup, join, done, done_write } = self;
        let stack = pooled_stack().map_err(errno)?;
        // In a Box of its own, leaked before the clone: the child is given
        // addresses in it, which must not move, and the spawner keeps no
        // reference into it, until the child has exec'd (see `Starting`).
        let boxed = Box::new(ChildMemory { plan, stack, _argv: argv, _envp: envp, _watchdog_pid: watchdog_pid });
        let memory = NonNull::from(Box::leak(boxed));
        let mut procs = None; // cgroup.procs, when the child must join by writing to it
        let started = match &cgroup {
            Some(cgroup) => match start_in_cgroup(memory, cgroup.as_raw_fd()) {
                // No clone3 with CLONE_INTO_CGROUP (Linux < 5.7, or not written
                // here): no child was made, so the memory is ours again; join
                // before exec.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)) => open_procs(cgroup.as_raw_fd()).and_then(|file| {
                    // SAFETY: no child has the memory (the clone failed).
                    unsafe { (*memory.as_ptr()).plan.cgroup_procs = file.as_raw_fd() };
                    procs = Some(file);
                    start(memory)
                }),
                other => other,
            },
            None => start(memory),
        };
        // The child has its own copies of these (it shares our memory, not our fds).
        drop(done_write);
        drop(procs);
        drop(join);
        drop(stdio); // the child's ends of the pipes
        match started {
            Ok(pid) => Ok(Starting { pid, done, memory: Some(memory) }),
            Err(e) => {
                // No child: nothing reads the memory.
                // SAFETY: the Box leaked above, which no child has.
                drop(unsafe { Box::from_raw(memory.as_ptr()) });
                Err(Failure::from(errno(e)))
            }
        }
    }
}

/// A close-on-exec pipe: the read end, and the write end at fd 5 or above.
fn done_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 into an array of two.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two new fds that nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    if write.as_raw_fd() > 4 {
        return Ok((read, write));
    }
    // SAFETY: fcntl on our own fd.
    let high = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 5) };
    if high < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    Ok((read, unsafe { OwnedFd::from_raw_fd(high) }))
}

/// Reaps our child `pid`, waiting for it to exit.
pub fn reap(pid: libc::pid_t) {
    let mut raw = 0;
    // SAFETY: waitpid on our own child.
    unsafe { libc::waitpid(pid, &mut raw, 0) };
}

/// Some child of ours that has exited and is not reaped yet (the first the
/// kernel finds: one already reported can hide others behind it).
pub fn first_exited() -> Option<libc::pid_t> {
    // SAFETY: waitid on our own children, with a zeroed siginfo.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    if unsafe { libc::waitid(libc::P_ALL, 0, &mut info, flags) } != 0 {
        return None;
    }
    // SAFETY: waitid filled in the child fields, or left si_pid 0.
    match unsafe { info.si_pid() } {
        0 => None,
        pid => Some(pid),
    }
}

/// The wait status of our child `pid` if it has exited, leaving it unreaped.
pub fn exited(pid: libc::pid_t) -> io::Result<Option<i32>> {
    // SAFETY: waitid on our own unreaped child, with a zeroed siginfo.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    if unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid filled in the child fields, or left si_pid 0.
    let (who, status) = unsafe { (info.si_pid(), info.si_status()) };
    if who == 0 {
        return Ok(None);
    }
    Ok(Some(match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_DUMPED => (status & 0x7f) | 0x80,
        _ => status & 0x7f,
    }))
}

/// What the child does between clone and exec, all of it prepared before.
struct Plan {
    path: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// `WATCHDOG_PID=` with room for the digits (null: no such variable),
    /// one of `envp`'s entries: the child writes its pid there.
    watchdog_pid_var: *mut u8,
    cwd: Option<CString>,
    /// The fd that becomes fd 0, 1, 2, 3, 4 in the program (-1: leave it).
    stdio: [RawFd; 5],
    /// `cgroup.procs` of the program's leaf cgroup, which the child joins
    /// before exec (-1: none, or the child was cloned into its cgroup).
    cgroup_procs: RawFd,
    /// `cgroup.procs` of v1 cgroups to join before exec (-1: none).
    joins: [RawFd; 3],
    /// A session of its own, with fd 0 (a terminal) as its controlling
    /// terminal; otherwise a process group of its own.
    session: bool,
    /// The spawner's pid: the child checks that its death signal was armed in time.
    parent: libc::pid_t,
    /// User, group, nice, limits, umask: applied just before exec.
    privileges: Privileges,
    /// Set by the child when it fails before exec, with the step that failed.
    errno: AtomicI32,
    step: AtomicU8,
}

/// The child, between clone and exec. It shares the spawner's memory and
/// its thread's TLS while the spawner goes on (see [`Starting`]): only
/// system calls here, made without libc's wrappers (which would write the
/// spawner's `errno`), no allocation, no locks.
extern "C" fn child_main(plan: *mut libc::c_void) -> libc::c_int {
    use crate::program::syscall::failed;
    use crate::syscall;
    // SAFETY: `plan` points to the Plan of a `Starting`, which keeps it
    // until the child has exec'd or exited.
    let plan = unsafe { &*(plan as *const Plan) };
    /// Tells the parent why, and ends the child without running anything of portnode's.
    fn fail(plan: &Plan, step: Step, errno: i32) -> ! {
        plan.step.store(step as u8, Ordering::Release);
        plan.errno.store(errno, Ordering::Release);
        exit(127)
    }
    fn exit(code: i32) -> ! {
        // SAFETY: exit_group only ends this child.
        unsafe { syscall!(libc::SYS_exit_group, code) };
        #[allow(clippy::empty_loop)]
        loop {}
    }
    /// `fail` if `ret` is a failure.
    fn check(plan: &Plan, ret: isize, step: Step) -> isize {
        match failed(ret) {
            Some(errno) => fail(plan, step, errno),
            None => ret,
        }
    }
    // SAFETY: plain system calls on values prepared by the parent.
    unsafe {
        // portnode's signal handlers must not run here, and the program
        // starts with default dispositions and nothing blocked.
        let default: KernelSigaction = [0; 4];
        let every = !NOTED.load(Ordering::Acquire);
        for signal in 1..=64 {
            let changed = every || NOT_DEFAULT[signal as usize].load(Ordering::Relaxed);
            if changed && signal != libc::SIGKILL && signal != libc::SIGSTOP {
                syscall!(libc::SYS_rt_sigaction, signal, &default as *const KernelSigaction, 0, 8);
            }
        }
        let none: u64 = 0;
        syscall!(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &none as *const u64, 0, 8);

        check(plan, syscall!(libc::SYS_prctl, libc::PR_SET_PDEATHSIG, libc::SIGKILL), Step::Setup);
        // The spawner may have died before the death signal was armed.
        if syscall!(libc::SYS_getppid) != plan.parent as isize {
            exit(1);
        }
        // A session leader leads its process group too: its pid is the pgid either way.
        check(plan, if plan.session { syscall!(libc::SYS_setsid) } else { syscall!(libc::SYS_setpgid, 0, 0) }, Step::Setup);
        // Into the program's cgroup before anything of the program runs:
        // whatever it starts later (setsid, double forks) starts inside.
        if plan.cgroup_procs >= 0 && check(plan, syscall!(libc::SYS_write, plan.cgroup_procs, b"0".as_ptr(), 1), Step::Setup) != 1 {
            fail(plan, Step::Setup, libc::EIO);
        }
        for &procs in plan.joins.iter().filter(|&&fd| fd >= 0) {
            if check(plan, syscall!(libc::SYS_write, procs, b"0".as_ptr(), 1), Step::Setup) != 1 {
                fail(plan, Step::Setup, libc::EIO);
            }
        }
        // Move every source above the targets first, so that none is
        // clobbered, then put each in place (dup3 clears close-on-exec;
        // a source is never its target, which dup3 refuses).
        let mut high = [-1isize; 5];
        for (target, &fd) in plan.stdio.iter().enumerate() {
            if fd >= 0 {
                high[target] = check(plan, syscall!(libc::SYS_fcntl, fd, libc::F_DUPFD_CLOEXEC, 10), Step::Setup);
            }
        }
        for (target, &fd) in high.iter().enumerate() {
            if fd >= 0 {
                check(plan, syscall!(libc::SYS_dup3, fd, target, 0), Step::Setup);
            }
        }
        if plan.session {
            check(plan, syscall!(libc::SYS_ioctl, 0, libc::TIOCSCTTY, 0), Step::Setup);
        }
        // The directory first, while the child still has portnode's
        // privileges (as sudo does): a user's program may start in a
        // directory that user could not enter (a root-owned 0700 checkout).
        if let Some(dir) = &plan.cwd {
            check(plan, syscall!(libc::SYS_chdir, dir.as_ptr()), Step::Chdir);
        }
        if let Err((step, errno)) = plan.privileges.apply() {
            fail(plan, step, errno);
        }
        // A change of user or group clears the death signal: arm it again,
        // and look again whether the spawner is still there.
        check(plan, syscall!(libc::SYS_prctl, libc::PR_SET_PDEATHSIG, libc::SIGKILL), Step::Setup);
        if syscall!(libc::SYS_getppid) != plan.parent as isize {
            exit(1);
        }
        if !plan.watchdog_pid_var.is_null() {
            PidVar::fill(plan.watchdog_pid_var);
        }
        let ret = syscall!(libc::SYS_execve, plan.path.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
        fail(plan, Step::Exec, failed(ret).unwrap_or(libc::EINVAL))
    }
}

/// The flags every clone of a child takes: its own process, in our memory,
/// and (where the child cannot make its system calls without libc, see
/// [`crate::program::syscall::CHILD_RUNS_ALONE`]) returning only once it
/// has exec'd or exited.
fn clone_flags() -> libc::c_int {
    if crate::program::syscall::CHILD_RUNS_ALONE { libc::CLONE_VM } else { libc::CLONE_VM | libc::CLONE_VFORK }
}

/// Clones the child and returns its pid.
fn start(memory: NonNull<ChildMemory>) -> io::Result<libc::pid_t> {
    // SAFETY: the memory is live; only addresses are taken, no reference.
    let (plan, top) = unsafe { (std::ptr::addr_of!((*memory.as_ptr()).plan) as *mut libc::c_void, (*memory.as_ptr()).stack.top() as *mut libc::c_void) };
    // SAFETY: the stack and the plan outlive the child's use of them (its
    // `Starting` keeps them until it has exec'd or exited); the stack's top
    // is 16-byte aligned as the ABI wants. All signals are blocked around
    // the clone so that no handler of portnode's runs in the child before
    // it has reset them.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(child_main, top, clone_flags() | libc::SIGCHLD, plan);
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
fn start_in_cgroup(memory: NonNull<ChildMemory>, cgroup: RawFd) -> io::Result<libc::pid_t> {
    // SAFETY: the memory is live; only addresses are taken, no reference.
    let (plan, bottom) = unsafe { (std::ptr::addr_of!((*memory.as_ptr()).plan), (*memory.as_ptr()).stack.bottom()) };
    let args = CloneArgs {
        flags: clone_flags() as u64 | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: bottom as u64,
        stack_size: STACK as u64,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup as u64,
    };
    let ret: i64;
    // SAFETY: as in `start`: the child shares our memory on its own stack
    // (which outlives its use: its `Starting` keeps it until it has exec'd
    // or exited) and runs `child_main`, which makes only system calls and
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
            in("r12") plan,
            lateout("rcx") _,
            lateout("r11") _,
        );
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    if ret < 0 { Err(io::Error::from_raw_os_error(-ret as i32)) } else { Ok(ret as libc::pid_t) }
}

/// Elsewhere than x86_64: no clone3 here, the child joins by writing `cgroup.procs`.
#[cfg(not(target_arch = "x86_64"))]
fn start_in_cgroup(_memory: NonNull<ChildMemory>, _cgroup: RawFd) -> io::Result<libc::pid_t> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}


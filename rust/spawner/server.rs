//! The spawner's side: a loop, single-threaded, that starts programs on
//! request, passes their pipe ends to portnode, tells portnode when each
//! exits, and reaps each when portnode says it may.
//!
//! It does not wait for a program's exec (see [`exec::Starting`]): the
//! answers to spawn requests wait in [`Server::starting`], in the order of
//! the requests, until each program has exec'd (or failed before), and a
//! program's exit is reported only after its answer.
//!
//! It holds no fd of any running program, only its socket to portnode, a
//! signalfd for SIGCHLD, and the fds of the restart grants portnode armed
//! (a replacement's pipe ends, leaf and exec pipe, and the old program's
//! leaf's `cgroup.events`, for at most
//! [`crate::spawner::client::MAX_GRANTS`] grants), until each is used or
//! given up. An exit is found without a pidfd and without
//! looking at every program: the SIGCHLD's siginfo names one child, which
//! is reported at once, and at the next quiet moment (1 ms idle, 10 ms at
//! most) `waitid(P_ALL, WNOWAIT)` names any others the signal hid, one by
//! one (each reaped, or held, as soon as it is reported). A held zombie (a
//! program whose exit portnode has not processed yet, or whose port is
//! still open after it exited) hides the others from `P_ALL`: the walk is
//! made again once portnode has it reaped, and if it stays held for
//! [`HELD_HIDES_AT_MOST`], every running program is checked by pid. A slow
//! sweep is the last resort for anything missed.

use super::exec;
use super::protocol::{self, Reply, Request};
use super::socket;
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// How often every running program is checked, in case an exit signal was lost.
const SWEEP_MS: i32 = 10_000;

/// How long the spawner idles after a SIGCHLD before it asks the kernel for
/// the exits that signal may have hidden (SIGCHLDs that come while one is
/// pending are one), and the longest it puts that off while busy.
/// `waitid(P_ALL)` walks every child: 115-200 µs with 5,000 running,
/// measured on two machines, against 0.3-1.2 µs for the child the signal
/// names. So the named child
/// is reported at once, and the walk waits for a quiet moment: a burst of
/// exits shares one walk, and a spawn never waits behind it.
const HIDDEN_EXITS_IDLE_MS: i32 = 1;
const HIDDEN_EXITS_LATEST: std::time::Duration = std::time::Duration::from_millis(10);

/// How long a held zombie may hide other exits from `P_ALL` before every
/// running program is checked by pid (8 ms with 5,000 running). Most are
/// reaped within a millisecond, when portnode has processed their exit:
/// checking at once, as before, made a spawn wait behind 5,000 `waitid`s
/// after every exit.
const HELD_HIDES_AT_MOST: std::time::Duration = std::time::Duration::from_millis(20);

/// What the spawner knows of one of its programs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kid {
    /// Running, or exited and not yet reported. `hold`: keep it a zombie
    /// once reported, until portnode says `Reap`; `reap`: portnode has
    /// already said so.
    Running { hold: bool, reap: bool },
    /// Exit reported, held: waiting for portnode's `Reap`.
    Held,
}

/// A restart grant (see [`Request::Arm`]): what to start when its program
/// exits, prepared with the fds portnode gave for it, so that the restart
/// is little more than a clone.
struct Armed {
    id: u32,
    hold: bool,
    /// The replacement, ready to clone.
    next: exec::Prepared,
    /// `cgroup.events` of the leaf of the program it replaces: nothing may
    /// be left in it when the replacement starts. Opened when armed, and
    /// read then with `pread`.
    old_events: OwnedFd,
}

/// An answer to a spawn request or a restart grant's start, in the order
/// the requests came: a program still on its way to exec, or an answer
/// ready.
enum Answer {
    Starting { child: exec::Starting, hold: bool, grant: Option<u32> },
    Ready(Reply),
}

struct Server {
    sock: OwnedFd,
    /// Answers not sent yet, in order (see [`Server::answer_started`]).
    starting: VecDeque<Answer>,
    kids: HashMap<libc::pid_t, Kid>,
    /// Restart grants, by the program whose exit uses them.
    armed: HashMap<libc::pid_t, Armed>,
    /// Each grant's program, by the grant's id.
    armed_after: HashMap<u32, libc::pid_t>,
    inbox: Vec<u8>,
    fds: VecDeque<OwnedFd>,
    outbox: Vec<u8>,
    /// Reading the requests that came before an exit a grant waits for (see [`Server::check`]).
    draining: bool,
    /// A request read then that ends the spawner, as one read by the loop would.
    broken: Option<std::io::Error>,
    /// Since when exits may be hidden behind a SIGCHLD (see [`HIDDEN_EXITS_IDLE_MS`]).
    hidden_exits_since: Option<std::time::Instant>,
    /// The held zombie that hid the others from `P_ALL`, and since when
    /// one has (see [`HELD_HIDES_AT_MOST`]).
    hidden_by_held: Option<(libc::pid_t, std::time::Instant)>,
}

/// Runs the spawner until portnode goes (its end of the socket closes), then exits.
pub fn serve(sock: OwnedFd, portnode: libc::pid_t) -> ! {
    let signals = match prepare(&sock, portnode) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("portnode spawner: cannot start: {e}");
            // SAFETY: leave without running the parent's destructors.
            unsafe { libc::_exit(1) }
        }
    };
    let mut server = Server { sock, starting: VecDeque::new(), kids: HashMap::new(), armed: HashMap::new(), armed_after: HashMap::new(), draining: false, broken: None, inbox: Vec::new(), fds: VecDeque::new(), outbox: Vec::new(), hidden_exits_since: None, hidden_by_held: None };
    let code = match server.run(&signals) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("portnode spawner: {e}");
            1
        }
    };
    // Our programs get SIGKILL from their parent-death signal as we go.
    // SAFETY: leave without running the parent's destructors or atexit handlers.
    unsafe { libc::_exit(code) }
}

/// Detaches from what portnode holds open, dies with portnode, blocks
/// SIGCHLD and returns a signalfd for it.
fn prepare(sock: &OwnedFd, portnode: libc::pid_t) -> std::io::Result<OwnedFd> {
    // SAFETY: plain system calls in the freshly forked, single-threaded child.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"portnode-spawn".as_ptr() as libc::c_ulong, 0, 0, 0);
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::getppid() != portnode {
            libc::_exit(0);
        }
        // stdin and stdout are portnode's link to whoever started it: not
        // ours to hold. stderr stays, for the programs that inherit it.
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::close(null);
        }
        // Nothing else of portnode's (the watchdog's pipe, the listener...).
        let keep = sock.as_raw_fd();
        for fd in 3..keep {
            libc::close(fd);
        }
        libc::syscall(libc::SYS_close_range, keep as u32 + 1, u32::MAX, 0);
        // A signal to portnode's whole group (Ctrl-C in a terminal, a kill
        // of the group) is for portnode, which stops its programs; the
        // spawner goes when portnode does, not before.
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            libc::signal(signal, libc::SIG_IGN);
        }
        // Our dispositions are final: a program resets only those that differ.
        exec::note_signal_dispositions();
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

impl Server {
    fn run(&mut self, signals: &OwnedFd) -> std::io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // The first program whose answer waits, until it has exec'd.
            let first = match self.starting.front() {
                Some(Answer::Starting { child, .. }) => child.done_fd(),
                _ => -1,
            };
            let mut polls = [
                libc::pollfd { fd: self.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: signals.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                // Only to wake the loop: the answers go at its end.
                libc::pollfd { fd: first, events: libc::POLLIN, revents: 0 },
            ];
            let mut timeout = if self.hidden_exits_since.is_some() { HIDDEN_EXITS_IDLE_MS } else { SWEEP_MS };
            if let Some((_, since)) = self.hidden_by_held {
                let left = HELD_HIDES_AT_MOST.saturating_sub(since.elapsed()).as_millis() as i32;
                timeout = timeout.min(left.max(1));
            }
            // SAFETY: poll over our fds (a negative one is skipped).
            let n = unsafe { libc::poll(polls.as_mut_ptr(), 3, timeout) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if polls[1].revents != 0 {
                self.read_signals(signals.as_raw_fd());
            }
            match self.hidden_exits_since {
                Some(since) if n == 0 || since.elapsed() >= HIDDEN_EXITS_LATEST => {
                    self.hidden_exits_since = None;
                    self.find_hidden_exits();
                }
                Some(_) => {}
                None if n == 0 && self.hidden_by_held.is_none() => self.sweep(),
                None => {}
            }
            if self.hidden_by_held.is_some_and(|(_, since)| since.elapsed() >= HELD_HIDES_AT_MOST) {
                self.hidden_by_held = None;
                self.sweep();
            }
            if let Some(e) = self.broken.take() {
                return Err(e);
            }
            if polls[0].revents != 0 {
                // Without waiting: an exit handled above may have read it all
                // already (see `Server::check`).
                let got = loop {
                    match socket::recv_now(&self.sock, &mut buf, &mut self.fds) {
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break None,
                        other => break Some(other?),
                    }
                };
                if got == Some(0) {
                    return Ok(()); // portnode is gone
                }
                if let Some(got) = got {
                    self.inbox.extend_from_slice(&buf[..got]);
                    self.handle_requests()?;
                }
            }
            if let Some(e) = self.broken.take() {
                return Err(e);
            }
            self.answer_started();
            self.flush()?;
        }
    }

    fn handle_requests(&mut self) -> std::io::Result<()> {
        let mut used = 0;
        // Reaps wait until the spawns read with them have started: a
        // restart's spawn often comes with the reap of the program it
        // replaces, and the wait4 (~10-20 µs) is not the restart's to wait for.
        let mut reaps = Vec::new();
        while let Some((body, len)) = protocol::next_message(&self.inbox[used..])? {
            let request = Request::decode(body)?;
            used += len;
            match request {
                Request::Spawn(command) => match self.take_given(&command) {
                    // Fds that did not arrive (our fd table was full).
                    None => self.starting.push_back(Answer::Ready(Reply::Failed { errno: libc::EMFILE, step: 0 })),
                    Some(given) => self.start(&command, given, None),
                },
                Request::Arm { id, after, command } => {
                    let given = self.take_given(&command);
                    let old_events = self.fds.pop_front().and_then(|leaf| open_events(&leaf));
                    let running = matches!(self.kids.get(&after), Some(Kid::Running { .. }));
                    let armable = running && !self.armed.contains_key(&after) && !self.armed_after.contains_key(&id);
                    // Prepared now: a replacement that cannot be (no fd
                    // left for its exec pipe, say) is not armed, and
                    // portnode restarts the program the usual way, then.
                    let next = given.filter(|_| armable).map(|given| exec::prepare(&command, given));
                    match (next, old_events) {
                        (Some(Ok(next)), Some(old_events)) => {
                            self.armed_after.insert(id, after);
                            self.armed.insert(after, Armed { id, hold: command.hold, next, old_events });
                        }
                        // Exited already (portnode will hear, and restart
                        // it itself), not one to arm, or not prepared: its fds close.
                        _ => Reply::NotRestarted { id }.encode(&mut self.outbox),
                    }
                }
                Request::Disarm(id) => {
                    if let Some(after) = self.armed_after.remove(&id) {
                        self.armed.remove(&after);
                        Reply::NotRestarted { id }.encode(&mut self.outbox);
                    }
                }
                Request::Reap(pid) => reaps.push(pid),
            }
        }
        self.inbox.drain(..used);
        for pid in reaps {
            self.reap(pid);
        }
        Ok(())
    }

    /// The fds that come with `command`, in the order they were sent;
    /// `None` if some did not arrive (our fd table was full).
    fn take_given(&mut self, command: &protocol::Command) -> Option<exec::Given> {
        let mut take = |wanted: bool| if wanted { self.fds.pop_front() } else { None };
        let given = exec::Given {
            stdin: take(command.stdin),
            stdout: take(command.stdout),
            stderr: take(command.stderr_pipe()),
            cgroup: take(command.in_cgroup),
            pty: take(command.pty),
            join: (0..command.join).filter_map(|_| take(true)).collect(),
        };
        let complete = (given.stdin.is_some() || !command.stdin)
            && (given.stdout.is_some() || !command.stdout)
            && (given.stderr.is_some() || !command.stderr_pipe())
            && (given.cgroup.is_some() || !command.in_cgroup)
            && (given.pty.is_some() || !command.pty)
            && given.join.len() == usize::from(command.join);
        complete.then_some(given)
    }

    /// Starts `command` (for restart grant `grant`, if any); its answer
    /// waits its turn in [`Server::starting`].
    fn start(&mut self, command: &protocol::Command, given: exec::Given, grant: Option<u32>) {
        self.started(exec::start_command(command, given), command.hold, grant);
    }

    /// Queues the answer of a start (see [`Server::start`]).
    fn started(&mut self, start: Result<exec::Starting, exec::Failure>, hold: bool, grant: Option<u32>) {
        let answer = match start {
            Ok(child) => Answer::Starting { child, hold, grant },
            Err(failure) => Answer::Ready(failed(grant, failure)),
        };
        self.starting.push_back(answer);
    }

    /// Sends the answers that are ready, in order: a program that has
    /// exec'd becomes one of [`Server::kids`] as its answer goes, and its
    /// exit, if it came already, is reported right after.
    fn answer_started(&mut self) {
        while let Some(front) = self.starting.front() {
            if matches!(front, Answer::Starting { child, .. } if !child.is_done()) {
                return;
            }
            match self.starting.pop_front() {
                Some(Answer::Ready(reply)) => reply.encode(&mut self.outbox),
                Some(Answer::Starting { child, hold, grant }) => match child.finish() {
                    Ok(pid) => {
                        match grant {
                            None => Reply::Started { pid },
                            Some(id) => Reply::Restarted { id, pid },
                        }
                        .encode(&mut self.outbox);
                        self.kids.insert(pid, Kid::Running { hold, reap: false });
                        self.check(pid);
                    }
                    Err(failure) => failed(grant, failure).encode(&mut self.outbox),
                },
                None => return,
            }
        }
    }

    /// True if `pid` is a program whose answer has not gone yet.
    fn is_starting(&self, pid: libc::pid_t) -> bool {
        self.starting.iter().any(|a| matches!(a, Answer::Starting { child, .. } if child.pid == pid))
    }

    /// portnode's `Reap`: held program `pid` may go once it has exited.
    fn reap(&mut self, pid: libc::pid_t) {
        match self.kids.get(&pid).copied() {
            Some(Kid::Held) => {
                exec::reap(pid);
                self.kids.remove(&pid);
                if self.hidden_by_held.is_some_and(|(hider, _)| hider == pid) {
                    // What it hid shows now: walk again at the next quiet moment.
                    self.hidden_by_held = None;
                    self.hidden_exits_since.get_or_insert_with(std::time::Instant::now);
                }
            }
            Some(Kid::Running { hold: true, .. }) => {
                self.kids.insert(pid, Kid::Running { hold: true, reap: true });
                self.check(pid);
            }
            // Not held: reaped when it exits anyway. Unknown: already gone.
            Some(Kid::Running { hold: false, .. }) | None => {}
        }
    }

    /// Reads the pending SIGCHLD and reports the program it names; the
    /// exits it may hide are looked for soon after.
    fn read_signals(&mut self, fd: RawFd) {
        loop {
            // SAFETY: a zeroed plain-data struct, filled by read(2).
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reading one siginfo into a buffer of its size.
            let n = unsafe { libc::read(fd, (&mut info as *mut libc::signalfd_siginfo).cast(), size) };
            if n != size as isize {
                break;
            }
            self.check(info.ssi_pid as libc::pid_t);
            self.hidden_exits_since.get_or_insert_with(std::time::Instant::now);
        }
    }

    /// Reports every program that has exited and was not reported:
    /// SIGCHLDs that came together are one, so the kernel is asked.
    fn find_hidden_exits(&mut self) {
        while let Some(pid) = exec::first_exited() {
            match self.kids.get(&pid).copied() {
                Some(Kid::Running { .. }) => {
                    self.check(pid);
                    if self.kids.get(&pid) == Some(&Kid::Held) {
                        // Held, it hides the next one from P_ALL.
                        self.hidden_by(pid);
                        return;
                    }
                }
                Some(Kid::Held) => {
                    self.hidden_by(pid);
                    return;
                }
                None if self.is_starting(pid) => {
                    // Exited before its answer went (or failed before
                    // exec): it is reported, or reaped, once its answer
                    // goes. The kernel lists children oldest first, so what
                    // it hides is younger, and waits for its answer too.
                    return;
                }
                None => exec::reap(pid), // not a program (cannot happen): do not let it linger
            }
        }
    }

    /// Held zombie `pid` hides other exits: look again when it is reaped,
    /// or by pid once one has hidden them for [`HELD_HIDES_AT_MOST`].
    fn hidden_by(&mut self, pid: libc::pid_t) {
        let since = self.hidden_by_held.map_or_else(std::time::Instant::now, |(_, since)| since);
        self.hidden_by_held = Some((pid, since));
    }

    /// If program `pid` has exited and portnode has not heard, tells it;
    /// reaps it unless it is held. A program with a restart grant is
    /// replaced first, before anything else is done or said.
    fn check(&mut self, pid: libc::pid_t) {
        let Some(Kid::Running { hold, reap }) = self.kids.get(&pid).copied() else { return };
        let status = match exec::exited(pid) {
            Ok(Some(status)) => status,
            Ok(None) => return,
            // Not our child any more (cannot happen while we hold it): say 255.
            Err(_) => 255 << 8,
        };
        if self.armed.contains_key(&pid) && !self.draining {
            // portnode gives a grant up before it stops the program (or
            // closes its pipes): what it sent before this exit is read
            // first, so that a give-up it wrote first is not overtaken.
            // A `Reap` of this program read here handles its exit itself
            // (the report, the restart, the reap), and this returns.
            self.draining = true;
            self.read_waiting_requests();
            self.draining = false;
            if self.kids.get(&pid).copied() != Some(Kid::Running { hold, reap }) {
                return; // handled meanwhile
            }
        }
        let restarted = self.armed.remove(&pid).map(|Armed { id, hold, next, old_events }| {
            self.armed_after.remove(&id);
            if !leaf_empty(&old_events) {
                // Something of the old program is left (a child it started):
                // portnode stops it, and restarts the program itself.
                return Some(Reply::NotRestarted { id });
            }
            self.started(next.start(), hold, Some(id));
            None
        });
        Reply::Exited { pid, status }.encode(&mut self.outbox);
        if let Some(Some(reply)) = restarted {
            reply.encode(&mut self.outbox);
        }
        if hold && !reap {
            self.kids.insert(pid, Kid::Held);
        } else {
            exec::reap(pid);
            self.kids.remove(&pid);
        }
    }

    /// Reads and handles what portnode has sent and the loop has not read
    /// yet, without waiting. A request that ends the spawner is kept for
    /// the loop ([`Server::broken`]).
    fn read_waiting_requests(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match socket::recv_now(&self.sock, &mut buf, &mut self.fds) {
                Ok(0) => return, // portnode is gone: the loop sees it too
                Ok(n) => {
                    self.inbox.extend_from_slice(&buf[..n]);
                    if let Err(e) = self.handle_requests() {
                        self.broken.get_or_insert(e);
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    self.broken.get_or_insert(e);
                    return;
                }
            }
        }
    }

    fn sweep(&mut self) {
        let running: Vec<libc::pid_t> = self.kids.iter().filter(|(_, k)| matches!(k, Kid::Running { .. })).map(|(p, _)| *p).collect();
        for pid in running {
            self.check(pid);
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.outbox.is_empty() {
            socket::send_all(self.sock.as_raw_fd(), &self.outbox, &[])?;
            self.outbox.clear();
        }
        Ok(())
    }
}

/// The answer to a start that failed: a spawn's, or restart grant `grant`'s.
fn failed(grant: Option<u32>, exec::Failure { errno, step }: exec::Failure) -> Reply {
    let step = step.map_or(0, |s| s as u8);
    match grant {
        None => Reply::Failed { errno, step },
        Some(id) => Reply::RestartFailed { id, errno, step },
    }
}

/// `cgroup.events` of the leaf cgroup whose directory is `dir`.
fn open_events(dir: &OwnedFd) -> Option<OwnedFd> {
    // SAFETY: openat on our directory fd with a NUL-terminated name.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c"cgroup.events".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    // SAFETY: a new fd, owned from here.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// True if the leaf whose `cgroup.events` is `events` holds no process now
/// (a read from offset 0 makes the file's text anew).
fn leaf_empty(events: &OwnedFd) -> bool {
    let mut buf = [0u8; 128];
    // SAFETY: reading into a buffer of its size.
    let n = unsafe { libc::pread(events.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    n > 0 && buf[..n as usize].split(|&b| b == b'\n').any(|line| line == b"populated 0")
}

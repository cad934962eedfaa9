//! portnode's side of the spawner: requests go out in order, replies come
//! back in the same order, and exit notices are routed to the program
//! they name. One task ([`attach`]) reads and writes the socket; a spawner
//! that goes away ends portnode, and the watchdog cleans up.

use super::protocol::{self, Command, Reply, Request};
use super::socket;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Poll, Waker};
use tokio::io::unix::AsyncFd;
use tokio::sync::{oneshot, Notify};
use tracing::{error, warn};

/// The spawner's socket and pid, from [`super::start`] until [`attach`].
pub(super) static FORKED: Mutex<Option<(OwnedFd, libc::pid_t)>> = Mutex::new(None);

static CLIENT: OnceLock<Client> = OnceLock::new();

/// A program the spawner started: its pid, and where its exit will be told.
pub struct Started {
    pub pid: libc::pid_t,
    pub exit: Arc<ExitSlot>,
}

/// The answer to a spawn request, to come.
pub type Starting = oneshot::Receiver<io::Result<Started>>;

/// Where a program's exit status arrives. Waiting leaves the waiter's waker
/// here (a poll function, not a `Notify` waiter node in every port's task).
#[derive(Default)]
pub struct ExitSlot {
    state: Mutex<(Option<ExitStatus>, Vec<Waker>)>,
}

impl ExitSlot {
    pub fn get(&self) -> Option<ExitStatus> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// Waits until the program has exited. Cancel-safe; any number may wait.
    pub fn wait(&self) -> impl std::future::Future<Output = ExitStatus> + '_ {
        std::future::poll_fn(move |cx| self.poll_wait(cx))
    }

    /// [`ExitSlot::wait`] as a poll function.
    pub fn poll_wait(&self, cx: &mut std::task::Context<'_>) -> Poll<ExitStatus> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(status) = state.0 {
            return Poll::Ready(status);
        }
        if !state.1.iter().any(|w| w.will_wake(cx.waker())) {
            // Room for one more, not four: there is one waiter, the port.
            state.1.reserve_exact(1);
            state.1.push(cx.waker().clone());
        }
        Poll::Pending
    }

    fn set(&self, status: ExitStatus) {
        let wakers = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.0 = Some(status);
            std::mem::take(&mut state.1)
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

struct Client {
    sock: AsyncFd<OwnedFd>,
    pid: libc::pid_t,
    state: Mutex<State>,
    /// Something was queued to send.
    queued: Notify,
    /// A spawn request was answered.
    answered: Notify,
}

/// The most spawn requests unanswered at once. Each holds the program's
/// ends of its pipes in portnode until it is sent, and its bytes until it
/// is read: without a bound, a burst of opens (which do not wait for their
/// program) would hold twice the fds and all the requests at once.
pub const IN_FLIGHT: usize = 16;

#[derive(Default)]
struct State {
    /// Messages not yet (fully) sent: bytes, how many are sent, and the fds
    /// that go with the first byte.
    out: VecDeque<(Vec<u8>, usize, Vec<OwnedFd>)>,
    /// Callers waiting for the answer to their `Spawn`, in order.
    waiting: VecDeque<(oneshot::Sender<io::Result<Started>>, bool)>,
    /// Programs started whose exit is not reported yet, or who are held.
    exits: HashMap<libc::pid_t, Arc<ExitSlot>>,
    /// Of those, the held ones (reaped only on our `Reap`).
    held: std::collections::HashSet<libc::pid_t>,
    /// `Reap` requests not queued yet (see [`reap`]).
    reaps: Vec<u8>,
    /// Restart grants armed and not answered yet, by id.
    grants: HashMap<u32, Grant>,
    /// The grant armed on each program, by the program's pid.
    granted: HashMap<libc::pid_t, u32>,
    /// Programs portnode has begun to stop: no grant may be armed on them.
    stopping: std::collections::HashSet<libc::pid_t>,
    /// The id of the next grant.
    next_grant: u32,
}

/// A restart grant (see [`arm`]): who waits for its program, and who waits
/// for its answer so as to stop the program it was armed on.
struct Grant {
    after: libc::pid_t,
    answer: Option<oneshot::Sender<io::Result<Started>>>,
    hold: bool,
    disarmed: bool,
    given_up: Vec<oneshot::Sender<()>>,
}

/// The most restart grants armed at once. The spawner holds each one's
/// fds (its program's pipe ends and leaf), which every clone copies and
/// every exec closes: beyond this many, a program is restarted the usual way.
pub const MAX_GRANTS: usize = 64;

/// Why a grant's program did not start: it was given up (see [`arm`]).
#[derive(Debug)]
pub struct NotRestarted;

impl std::fmt::Display for NotRestarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the restart grant was given up")
    }
}

impl std::error::Error for NotRestarted {}

/// True for the error of a grant given up (see [`arm`]).
pub fn is_not_restarted(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<NotRestarted>())
}

/// The error of a grant given up (see [`is_not_restarted`]).
pub fn not_restarted() -> io::Error {
    io::Error::other(NotRestarted)
}

/// Starts serving the spawner's socket. Call once, inside the runtime.
pub fn attach() -> io::Result<()> {
    let Some((sock, pid)) = FORKED.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return Err(io::Error::other("portnode has no spawner (it is forked at the start of main)"));
    };
    super::pipes::set_nonblocking(sock.as_raw_fd())?;
    // SAFETY: the AsyncFd owns the socket from here on; nothing else closes or replaces it.
    let sock = unsafe { AsyncFd::register(sock) }.map_err(io::Error::from)?;
    let client = Client { sock, pid, state: Mutex::new(State::default()), queued: Notify::new(), answered: Notify::new() };
    if CLIENT.set(client).is_err() {
        return Err(io::Error::other("spawner attached twice"));
    }
    tokio::spawn(async {
        if let Some(client) = CLIENT.get() {
            let e = client.serve().await;
            // Programs die with the spawner (their parent-death signal);
            // what they left, the watchdog removes once portnode is gone.
            error!(spawner = client.pid, error = %e, "the spawner is gone; portnode cannot start or watch programs: exiting");
            std::process::exit(70);
        }
    });
    Ok(())
}

/// The spawner's pid, once attached.
pub fn pid() -> Option<libc::pid_t> {
    CLIENT.get().map(|c| c.pid)
}

/// Returns once fewer than [`IN_FLIGHT`] spawn requests are unanswered.
/// Call before preparing an open.
pub async fn room() {
    let Some(client) = CLIENT.get() else { return };
    loop {
        let answered = client.answered.notified();
        tokio::pin!(answered);
        answered.as_mut().enable();
        if client.state.lock().unwrap_or_else(|e| e.into_inner()).waiting.len() < IN_FLIGHT {
            return;
        }
        answered.await;
    }
}

/// Asks the spawner to start `command`, giving it `fds` (the program's
/// ends of its pipes, then its cgroup's directory, as `command` says).
/// Requests are sent in order and answered in order; the answer comes
/// through the returned receiver. A held program (`command.hold`) stays a
/// zombie once exited, until [`reap`]; any other is reaped as its exit is
/// reported. If the receiver is dropped before the answer, the program is
/// killed.
pub fn spawn(command: Command, fds: Vec<OwnedFd>) -> io::Result<Starting> {
    let client = CLIENT.get().ok_or_else(|| io::Error::other("no spawner attached"))?;
    debug_assert_eq!(fds.len(), command.fd_count());
    let hold = command.hold;
    let mut bytes = Vec::new();
    let (tx, rx) = oneshot::channel();
    if let Err(e) = Request::Spawn(command).encode(&mut bytes) {
        // Too large for the spawner, which would refuse it and end
        // portnode: it is not sent, and the program fails to start as an
        // exec with as much would (E2BIG, its exit status). Its pipes close.
        warn!(error = %e, "a program's arguments and environment are too large for the spawner: not started");
        let _ = tx.send(Err(e));
        return Ok(rx);
    }
    {
        let mut state = client.state.lock().unwrap_or_else(|e| e.into_inner());
        state.waiting.push_back((tx, hold));
        // Pending reaps go along, after the spawn: the spawner starts the
        // program first.
        let reaps = std::mem::take(&mut state.reaps);
        bytes.extend_from_slice(&reaps);
        state.out.push_back((bytes, 0, fds));
    }
    // Sent now if the socket has room; an error shows in the serving task.
    let _ = client.flush();
    client.queued.notify_one();
    Ok(rx)
}

/// Arms a restart grant: the spawner starts `command` (with `fds`, as for
/// [`spawn`]) the moment program `after` exits, without waiting for
/// portnode, and the answer comes through the returned receiver, as a
/// spawn's: the program runs, or could not start, or the error
/// [`NotRestarted`] (see [`is_not_restarted`]): the grant was given up,
/// nothing was started. It is given up when portnode begins to stop
/// `after` (see [`disarm`]), so that a program portnode stops is not
/// restarted behind its back; at once if that has begun already, if
/// `after` has exited, or if [`MAX_GRANTS`] are armed.
///
/// `after` must be a program whose exit the spawner has not reported
/// (checked here): then it is not reaped, and its pid is its own. The
/// caller names it by pid, from the program's start: a pid comes back
/// only after the kernel has handed out pid_max others.
pub fn arm(after: libc::pid_t, command: Command, fds: Vec<OwnedFd>) -> io::Result<Starting> {
    let client = CLIENT.get().ok_or_else(|| io::Error::other("no spawner attached"))?;
    // The program's fds, then `after`'s leaf.
    debug_assert_eq!(fds.len(), command.fd_count() + 1);
    let (tx, rx) = oneshot::channel();
    let hold = command.hold;
    let mut state = client.state.lock().unwrap_or_else(|e| e.into_inner());
    let running = state.exits.get(&after).is_some_and(|slot| slot.get().is_none());
    if !running || state.stopping.contains(&after) || state.granted.contains_key(&after) || state.grants.len() >= MAX_GRANTS {
        let _ = tx.send(Err(not_restarted()));
        return Ok(rx);
    }
    let id = state.next_grant;
    state.next_grant = id.wrapping_add(1);
    let mut bytes = Vec::new();
    if (Request::Arm { id, after, command }).encode(&mut bytes).is_err() {
        // Too large for the spawner: not armed (a restart the usual way
        // reports it, as exec would: E2BIG).
        let _ = tx.send(Err(not_restarted()));
        return Ok(rx);
    }
    state.grants.insert(id, Grant { after, answer: Some(tx), hold, disarmed: false, given_up: Vec::new() });
    state.granted.insert(after, id);
    state.out.push_back((bytes, 0, fds));
    drop(state);
    let _ = client.flush();
    client.queued.notify_one();
    Ok(rx)
}

/// True if one more grant may be armed (fewer than [`MAX_GRANTS`] are).
pub fn room_for_grant() -> bool {
    CLIENT.get().is_some_and(|c| c.state.lock().unwrap_or_else(|e| e.into_inner()).grants.len() < MAX_GRANTS)
}

/// Portnode begins to stop program `pid`: no grant may restart it. If one
/// is armed, it is given up, and the returned receiver resolves once the
/// spawner has answered it (the program is restarted, or will not be):
/// signal the program only then. `None`: no grant was armed (and none
/// will be).
pub fn disarm(pid: libc::pid_t) -> Option<oneshot::Receiver<()>> {
    disarm_grant(pid, true)
}

/// Gives up the grant armed on program `pid`, if there is one, as
/// [`disarm`] does, but a grant may be armed on it again.
pub fn give_up(pid: libc::pid_t) -> Option<oneshot::Receiver<()>> {
    disarm_grant(pid, false)
}

fn disarm_grant(pid: libc::pid_t, stopping: bool) -> Option<oneshot::Receiver<()>> {
    let client = CLIENT.get()?;
    let mut state = client.state.lock().unwrap_or_else(|e| e.into_inner());
    if stopping && state.exits.contains_key(&pid) {
        state.stopping.insert(pid);
    }
    let id = *state.granted.get(&pid)?;
    let (tx, rx) = oneshot::channel();
    let grant = state.grants.get_mut(&id)?;
    grant.given_up.push(tx);
    if !std::mem::replace(&mut grant.disarmed, true) {
        let mut bytes = Vec::with_capacity(9);
        if (Request::Disarm(id)).encode(&mut bytes).is_ok() {
            state.out.push_back((bytes, 0, Vec::new()));
        }
        drop(state);
        let _ = client.flush();
        client.queued.notify_one();
    }
    Some(rx)
}

/// Gives up every grant armed (at shutdown, before any program is
/// stopped): none restarts anything from here on. The answers come as usual.
pub fn give_up_all() {
    let Some(client) = CLIENT.get() else { return };
    let armed: Vec<libc::pid_t> = client.state.lock().unwrap_or_else(|e| e.into_inner()).granted.keys().copied().collect();
    for pid in armed {
        let _ = give_up(pid);
    }
}

/// Lets the spawner reap held program `pid` once it has exited (a program
/// not held is reaped anyway). Its pid may be reused from then on: signal
/// it no more.
///
/// Inside the runtime the request waits for the tasks that are ready to
/// run first, and goes with the next spawn request if one of them makes
/// one: a supervisor's restart or the next open after an exit (each
/// message wakes the spawner, which then takes the CPU from portnode, and
/// a restart waited behind the reap; measured with `bench/run restart`).
pub fn reap(pid: libc::pid_t) {
    let Some(client) = CLIENT.get() else { return };
    let mut bytes = Vec::with_capacity(9);
    if let Err(e) = Request::Reap(pid).encode(&mut bytes) {
        // Nine bytes: not too large, ever.
        error!(pid, error = %e, "cannot encode a reap request");
        return;
    }
    {
        let mut state = client.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.held.remove(&pid) {
            return;
        }
        state.exits.remove(&pid);
        state.stopping.remove(&pid);
        if tokio::runtime::Handle::try_current().is_ok() {
            state.reaps.extend_from_slice(&bytes);
            drop(state);
            client.queued.notify_one();
            return;
        }
        state.out.push_back((bytes, 0, Vec::new()));
    }
    // Sent now if the socket has room: this also runs after the runtime
    // is gone (at exit), when the serving task cannot. An error shows in
    // the serving task.
    let _ = client.flush();
}

/// Sends the reap requests that wait (see [`reap`]) now, as far as the
/// socket takes them: at shutdown, before the runtime goes.
pub fn send_reaps() {
    let Some(client) = CLIENT.get() else { return };
    client.queue_reaps();
    let _ = client.flush();
}

impl Client {
    /// Reads replies and sends requests until the spawner goes; returns why.
    async fn serve(&self) -> io::Error {
        let mut inbox: Vec<u8> = Vec::new();
        // Nothing comes from the spawner with fds; any that did are closed.
        let mut fds: VecDeque<OwnedFd> = VecDeque::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let has_out = !self.state.lock().unwrap_or_else(|e| e.into_inner()).out.is_empty();
            tokio::select! {
                ready = self.sock.readable() => {
                    let mut guard = match ready {
                        Ok(g) => g,
                        Err(e) => return e,
                    };
                    match guard.try_io(|sock| socket::recv(sock, &mut buf, &mut fds)) {
                        Ok(Ok(0)) => return io::Error::new(io::ErrorKind::UnexpectedEof, "its socket closed"),
                        Ok(Ok(n)) => {
                            inbox.extend_from_slice(&buf[..n]);
                            fds.clear();
                            if let Err(e) = self.handle_replies(&mut inbox) {
                                return e;
                            }
                        }
                        Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                        Ok(Err(e)) => return e,
                        Err(_would_block) => {}
                    }
                }
                ready = self.sock.writable(), if has_out => {
                    let mut guard = match ready {
                        Ok(g) => g,
                        Err(e) => return e,
                    };
                    match self.flush() {
                        Ok(true) => {}
                        Ok(false) => guard.clear_ready(),
                        Err(e) => return e,
                    }
                }
                _ = self.queued.notified() => {
                    if self.has_reaps() {
                        // Behind the tasks that are ready: a spawn among them takes them along.
                        tokio::task::yield_now().await;
                        self.queue_reaps();
                    }
                }
            }
        }
    }

    fn has_reaps(&self) -> bool {
        !self.state.lock().unwrap_or_else(|e| e.into_inner()).reaps.is_empty()
    }

    /// Queues the reap requests that wait, as one message.
    fn queue_reaps(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.reaps.is_empty() {
            let reaps = std::mem::take(&mut state.reaps);
            state.out.push_back((reaps, 0, Vec::new()));
        }
    }

    /// Sends what is queued, as far as the socket takes it; false if it is full.
    fn flush(&self) -> io::Result<bool> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((bytes, sent, fds)) = state.out.front_mut() {
            let attached: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
            match socket::send(self.sock.get_ref().as_raw_fd(), &bytes[*sent..], &attached) {
                Ok(n) => {
                    *sent += n;
                    // The spawner has its copies: ours close.
                    fds.clear();
                    if *sent == bytes.len() {
                        state.out.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                // Gone, or a request that can never be sent: either way no
                // program can be started or watched any more.
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn handle_replies(&self, inbox: &mut Vec<u8>) -> io::Result<()> {
        let mut used = 0;
        while let Some((body, len)) = protocol::next_message(&inbox[used..])? {
            let reply = Reply::decode(body)?;
            used += len;
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            match reply {
                Reply::Started { pid } => {
                    let (waiter, hold) = match state.waiting.pop_front() {
                        Some((w, hold)) => (Some(w), hold),
                        None => (None, false),
                    };
                    if hold {
                        state.held.insert(pid);
                    }
                    let exit = Arc::new(ExitSlot::default());
                    state.exits.insert(pid, exit.clone());
                    drop(state);
                    // No one to run it (the caller went away): it must not run either.
                    let unwanted = waiter.is_none_or(|w| w.send(Ok(Started { pid, exit })).is_err());
                    if unwanted {
                        kill_and_reap(pid);
                    }
                }
                Reply::Failed { errno, step } => {
                    let waiter = state.waiting.pop_front();
                    drop(state);
                    if let Some((w, _)) = waiter {
                        let _ = w.send(Err(failure(errno, step)));
                    }
                }
                Reply::Exited { pid, status } => {
                    // A held program keeps its entry until `reap`; any other
                    // is reaped already, and its pid may come back for a new one.
                    let slot = if state.held.contains(&pid) {
                        state.exits.get(&pid).cloned()
                    } else {
                        state.stopping.remove(&pid);
                        state.exits.remove(&pid)
                    };
                    if let Some(slot) = slot {
                        slot.set(ExitStatus::from_raw(status));
                    }
                }
                Reply::Restarted { id, pid } => {
                    let Some(grant) = state.answered(id) else {
                        // Not a grant of ours (cannot happen): it must not
                        // run. Held by the spawner: reaped on our word.
                        state.held.insert(pid);
                        drop(state);
                        error!(grant = id, pid, "the spawner restarted a program for a grant portnode does not know; killing it");
                        kill_and_reap(pid);
                        continue;
                    };
                    if grant.hold {
                        state.held.insert(pid);
                    }
                    let exit = Arc::new(ExitSlot::default());
                    state.exits.insert(pid, exit.clone());
                    drop(state);
                    if !grant.answer(Ok(Started { pid, exit })) {
                        kill_and_reap(pid);
                    }
                }
                Reply::RestartFailed { id, errno, step } => {
                    let grant = state.answered(id);
                    drop(state);
                    grant.map(|g| g.answer(Err(failure(errno, step))));
                }
                Reply::NotRestarted { id } => {
                    let grant = state.answered(id);
                    drop(state);
                    grant.map(|g| g.answer(Err(not_restarted())));
                }
            }
        }
        inbox.drain(..used);
        self.answered.notify_waiters();
        Ok(())
    }
}

impl Grant {
    /// Tells whoever waits for the grant's answer: those who gave it up,
    /// and its port; false if its port no longer waits.
    fn answer(self, answer: io::Result<Started>) -> bool {
        self.given_up.into_iter().for_each(|tx| {
            let _ = tx.send(());
        });
        self.answer.is_some_and(|w| w.send(answer).is_ok())
    }
}

impl State {
    /// Grant `id`, answered: it is armed no more.
    fn answered(&mut self, id: u32) -> Option<Grant> {
        let grant = self.grants.remove(&id)?;
        self.granted.remove(&grant.after);
        Some(grant)
    }
}

/// A `Failed` reply's error: the child's step and errno, or the spawner's errno.
fn failure(errno: i32, step: u8) -> io::Error {
    match crate::program::Step::from_u8(step) {
        Some(step) => crate::program::ChildFailed { step, errno }.into_io(),
        None => io::Error::from_raw_os_error(errno),
    }
}

/// Ends a program no one will run.
fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: kill(2) on a program the spawner holds unreaped.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    reap(pid);
}

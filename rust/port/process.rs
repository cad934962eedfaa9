//! The port process: one per open port, relaying between the owner and the
//! program with the port protocol's messages.
//!
//! Its loop is one `select!` that serves, at all times: the mailbox (the
//! owner's messages and calls, close, exit signals), the program's stdout
//! and stderr, writing what is queued to its stdin, and its exit. Nothing
//! is awaited outside it, so a port answers even while its program has
//! closed its stdout, never reads its stdin, or is being stopped.
//!
//! Flow control both ways: output is read only while the owner has room
//! (its connection's or mailbox's backlog is under the high-water mark),
//! checked before each frame, so one read never floods it; input queued for the
//! program past [`STDIN_BUSY`] makes `portnode:port_command` wait, as a
//! busy erts port does.
//!
//! Output for a remote owner is encoded straight to distribution frames
//! ([`Outbound`]): the frames of one read are queued on the connection
//! together, and a stream read goes out as it was read, without a copy.

use super::child::{self, Running};
use super::codec::{self, Frame, Kind};
use super::health::{Health, Stream};
use super::outbound::Outbound;
use super::output::{read_some, Output, MAX_READ, READ_CHUNK};
use super::request::{CallRequest, FlowMode, Request};
use super::settings::{Framing, PortSpec};
use super::spawn::{self, Spawned, Starting};
use super::OnStart;
use super::stdin::Stdin;
use super::usage;
use crate::etf::{self, a, int, tuple};
use crate::backlog::Backlog;
use crate::distribution::connection::{Outbox, Outgoing};
use crate::node::process::{Call, Process};
use crate::notify::socket::NotifySocket;
use eetf::{Pid, Term};
use std::cell::OnceCell;
use std::future::Future;
use std::process::ExitStatus;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::net::unix::pipe;
use tracing::{debug, info, warn};

/// Encoded frames are queued on the connection in batches of about this many bytes.
const BATCH: usize = 64 * 1024;

/// What became of data for the program.
enum Written {
    Queued,
    /// Not iodata, or the port has no way in.
    Bad,
    /// Longer than its `{packet, N}` header can say.
    TooLarge,
}

mod stop;
mod watched;

use stop::{Stop, Stopping};

/// What the message handlers decide.
enum Next {
    Continue,
    Exit(Term),
    /// Stop the program (its stop signal, SIGKILL after the grace period;
    /// see [`Running::terminate`]), then exit as it says.
    Stop(Box<Stop>),
}

struct Port {
    me: Process,
    owner: Pid,
    /// What a message to the owner waits behind; refreshed when the owner changes.
    owner_backlog: Option<Arc<Backlog>>,
    /// Output messages to a remote owner, encoded: made at the first
    /// output (a held port that outputs nothing keeps none), again when
    /// the owner changes.
    outbound: OnceCell<Option<Outbound>>,
    settings: Settings,
    program: Running,
    os_pid: u32,
    stdin: Stdin,
    bytes_in: u64,
    bytes_out: u64,
    /// Output ended and was reported with `eof`: the port stays open for the owner to close.
    done: bool,
    /// An unterminated last line, held back: a port reports it after the exit status.
    /// Boxed: rare, and a frame is 32 bytes of every port.
    last_line: Option<Box<Frame>>,
    /// What the port watches of the program (readiness, watchdog), if its settings ask.
    health: Option<Box<Health>>,
    /// Who waits for the program to be ready, to hear of its start then.
    awaiting_start: Option<Box<OnStart>>,
    /// The program's terminal (its master), with `{pty, _}`.
    pty: Option<std::os::fd::OwnedFd>,
    /// Its memory's peak, sampled, with `exit_stats` (see [`usage`]).
    peak: Option<Box<usage::Peak>>,
}

/// What the port keeps of its open settings once the program runs: the
/// rest (program, arguments, environment, directory, privileges) is for
/// starting it only, and would cost every held port its bytes.
struct Settings {
    /// The name `port_info(H, name)` reports.
    name: Box<str>,
    kill_timeout: Duration,
    close_grace: Duration,
    framing: Framing,
    binary: bool,
    exit_status: bool,
    exit_signal: bool,
    input: bool,
    output: bool,
    eof: bool,
    /// The program's stderr is logged by portnode (the default).
    stderr_log: bool,
    exit_stats: bool,
}

impl Settings {
    fn of(spec: PortSpec) -> Settings {
        let stderr_log = spec.stderr == super::settings::Stderr::Log;
        let PortSpec { name, kill_timeout, close_grace, framing, binary, exit_status, exit_signal, input, output, eof, exit_stats, .. } = spec;
        Settings { name: name.into_boxed_str(), kill_timeout, close_grace, framing, binary, exit_status, exit_signal, input, output, eof, stderr_log, exit_stats }
    }
}

/// What a port starts with, on the heap: the port's task holds a pointer
/// to it, not copies (an `async fn` keeps its arguments apart from what it
/// moves them into, and a task is as large as its largest state).
struct Launch {
    me: Process,
    owner: Pid,
    spec: PortSpec,
    notify: Option<NotifySocket>,
    on_start: OnStart,
}

/// Runs the port: waits for its program to start, tells `on_start` (once
/// it is ready, if its settings say how it tells), then serves it until it
/// closes; returns its exit reason.
pub fn run(me: Process, owner: Pid, spec: PortSpec, starting: Starting, notify: Option<NotifySocket>, on_start: OnStart) -> impl Future<Output = Term> + Send {
    launched(Box::new(Launch { me, owner, spec, notify, on_start }), Box::new(starting))
}

async fn launched(launch: Box<Launch>, starting: Box<Starting>) -> Term {
    // Messages wait in the mailbox meanwhile (about as long as an exec takes).
    // Boxed: the start is over in an exec's time; its state must not size
    // the task that serves the port from then on.
    let outcome = Box::pin((*starting).started()).await;
    // Out of the match before `serve`: a scrutinee kept across its await
    // would take room in every port's task.
    let (port, outputs) = match Port::start(launch, outcome) {
        Ok(started) => started,
        Err(Failed::InChild(launch, errno)) => {
            let Launch { me, owner, spec, .. } = *launch;
            // Boxed: this rare state must not size every port's task.
            return Box::pin(failed_start(me, owner, spec, errno)).await;
        }
        Err(Failed::Reason(reason)) => return reason,
    };
    serve(port, outputs).await
}

/// A program that did not start.
enum Failed {
    /// It failed before exec, with this errno: the port reports it as its exit status.
    InChild(Box<Launch>, i32),
    /// portnode could not start it: the handle's exit reason.
    Reason(Term),
}

impl Port {
    /// The port for a program that has started, with its output pipes, or
    /// why there is none. Tells `on_start` either way.
    fn start(launch: Box<Launch>, outcome: std::io::Result<Spawned>) -> Result<(Box<Port>, Box<(Output, Output)>), Failed> {
        let Launch { me, owner, spec, notify, on_start } = *launch;
        let spawned = match outcome {
            Ok(spawned) => spawned,
            Err(e) => {
                report_child_failure(&me, &owner, &spec.name, &e);
                return Err(match spawn::failed_in_child(&e) {
                    // Whoever waits for it to be ready hears it never will be.
                    Some(errno) if spec.lifecycle.ready.is_some() && matches!(on_start, OnStart::Reply(_) | OnStart::Tell(_)) => {
                        me.unlink(&owner);
                        started(&me, on_start, Err(watched::never_ready(errno)));
                        Failed::Reason(a("normal"))
                    }
                    Some(errno) => {
                        started(&me, on_start, Ok(None));
                        Failed::InChild(Box::new(Launch { me, owner, spec, notify: None, on_start: OnStart::Nobody }), errno)
                    }
                    None => {
                        let reason = a(spawn::errno_name(&e));
                        warn!(port = %me.pid(), program = %spec.name, error = %e, "cannot start the program");
                        if matches!(on_start, OnStart::Nobody) {
                            // The opener has its handle already: the handle's exit says why.
                            Failed::Reason(reason)
                        } else {
                            // The opener waits for the answer: it gets the error, and no handle.
                            me.unlink(&owner);
                            started(&me, on_start, Err(reason));
                            Failed::Reason(a("normal"))
                        }
                    }
                });
            }
        };
        let health = Health::new(&spec.lifecycle, notify);
        // A program that is to say it is ready has started for those who
        // wait only once it has (an opener told now still has its handle).
        let awaiting_start = match on_start {
            on_start @ (OnStart::Reply(_) | OnStart::Tell(_)) if health.as_ref().is_some_and(|h| h.awaiting_ready()) => Some(Box::new(on_start)),
            on_start => {
                started(&me, on_start, Ok(Some(spawned.os_pid)));
                None
            }
        };
        let Spawned { child, jail, os_pid, stdin, stdout, stderr, pty } = spawned;
        let program = Running::new(child, jail, spec.kill_timeout, spec.lifecycle.stop_signal);
        let peak = if spec.exit_stats { usage::Peak::start(&program) } else { None };
        let owner_backlog = me.node().backlog_of(&owner);
        let stdin = Stdin::new(stdin);
        let settings = Settings::of(spec);
        let port = Box::new(Port { me, owner, owner_backlog, outbound: OnceCell::new(), settings, program, os_pid, stdin, bytes_in: 0, bytes_out: 0, done: false, last_line: None, health, awaiting_start, pty, peak });
        Ok((port, Box::new((Output::new(stdout), Output::new(stderr)))))
    }
}

/// A program whose child failed before exec (chdir, setgid, setuid,
/// setrlimit, execve): the owner's node logs it, naming the program, the
/// step and the errno (through its `logger_proxy`, as OTP forwards log
/// events between nodes), and so does portnode. What the owner sees of it
/// otherwise (an exit status, or an error from the open) is as erts gives it.
fn report_child_failure(me: &Process, owner: &Pid, program: &str, e: &std::io::Error) {
    let Some(step) = crate::spawner::step::step_of(e) else { return };
    let errno = spawn::errno_name(e);
    warn!(port = %me.pid(), program, step = step.name(), errno, "program failed before exec");
    if owner.node == me.pid().node {
        return;
    }
    let meta = eetf::Map::from([(a("domain"), etf::list(vec![a("portnode")])), (a("portnode_port"), Term::from(me.pid().clone()))]);
    let event = tuple(vec![
        a("log"),
        a("warning"),
        etf::byte_list(b"portnode: program ~ts failed before exec: ~s: ~s (~ts)".to_vec()),
        etf::list(vec![etf::binary(program.as_bytes().to_vec()), a(step.name()), a(errno), etf::binary(e.to_string().into_bytes())]),
        Term::from(meta),
    ]);
    me.node().send_to_name_on(me.pid(), &owner.node.name, "logger_proxy", event);
}

/// Tells whoever waits that the program runs (its OS pid), failed to start
/// after the checks (`None`), or could not be started (the reason).
fn started(me: &Process, on_start: OnStart, outcome: Result<Option<u32>, Term>) {
    match on_start {
        OnStart::Nobody => {}
        OnStart::Reply(call) => {
            let reply = match &outcome {
                Ok(os_pid) => tuple(vec![a("ok"), Term::from(me.pid().clone()), os_pid.map_or_else(|| a("undefined"), |p| int(i64::from(p)))]),
                Err(reason) => tuple(vec![a("error"), reason.clone()]),
            };
            me.reply(&call, reply);
        }
        OnStart::ReplyHandle(call) => {
            let reply = match &outcome {
                Ok(_) => tuple(vec![a("ok"), Term::from(me.pid().clone())]),
                Err(reason) => tuple(vec![a("error"), reason.clone()]),
            };
            me.reply(&call, reply);
        }
        OnStart::Tell(tx) => {
            let _ = tx.send(outcome);
        }
    }
}

/// Serves the port until it closes; returns its exit reason. The program
/// then gets what it was sent, and time to finish (see [`Port::closed`]).
async fn serve(mut port: Box<Port>, mut outputs: Box<(Output, Output)>) -> Term {
    let reason = relay(&mut port, &mut outputs).await;
    let reason = port.settle_start(reason);
    // Read no more: on a terminal, closing the master's last fd hangs it up (see `closed`).
    outputs.0.pipe = None;
    let err = &mut outputs.1;
    let stderr = if port.settings.stderr_log { err.pipe.take().map(|pipe| (pipe, std::mem::take(&mut err.buf))) } else { None };
    port.closed(stderr);
    reason
}

async fn relay(port: &mut Port, outputs: &mut (Output, Output)) -> Term {
    let (out, err) = outputs;
    // As erts: a port with the program's output ends when that output does
    // (and its exit status is known, if asked for); an `out` port stays
    // open, reporting nothing, until it is closed.
    let ends_with_output = port.settings.input;
    let need_status = port.settings.exit_status || port.settings.exit_stats;
    let mut status: Option<ExitStatus> = None;
    // Boxed, as everything the loop keeps: a port's task is its largest state.
    let mut stopping: Option<Box<(Stopping, Box<Stop>)>> = None;
    loop {
        if let Err(reason) = port.deliver_output(out) {
            return reason;
        }
        let output_over = ends_with_output && out.finished() && err.finished();
        if let Some(status) = status.filter(|_| out.finished() && err.finished() && stopping.is_none()) {
            if port.awaiting_start.is_some() {
                return port.exited_before_ready(status);
            }
        }
        // Until it is ready (or has exited), a program that waits to be is not over.
        if output_over && !port.done && stopping.is_none() && port.awaiting_start.is_none() && (status.is_some() || !need_status) {
            if let Next::Exit(reason) = port.output_ended(status) {
                return reason;
            }
        }
        let room = port.owner_has_room();
        let cap = port.read_cap();
        let output_waits = out.blocked || out.pipe.is_some() || err.pipe.is_some();
        // Boxed, and made only while output waits for a busy owner: the
        // loop holds this future all along.
        let mut backlog_room = (!room && output_waits).then(|| port.owner_backlog.clone()).flatten().map(|b| Box::pin(async move { b.room().await }));
        let next = tokio::select! {
            msg = port.me.recv() => port.handle(Request::parse(msg)),
            read = read_some(out.pipe.as_mut(), &mut out.buf, cap), if out.pipe.is_some() && !out.blocked && room => {
                out.fresh = true;
                match read {
                    Ok(n) if n > 0 => {
                        port.bytes_in += n as u64;
                        port.saw_output(Stream::Stdout, &out.buf[out.buf.len() - n..]);
                    }
                    _ => out.pipe = None,
                }
                Next::Continue
            },
            // Lines for portnode's log are read whatever the owner's room.
            read = read_some(err.pipe.as_mut(), &mut err.buf, READ_CHUNK), if err.pipe.is_some() && (room || port.settings.stderr_log) => {
                match read {
                    Ok(n) if n > 0 => {
                        let fresh = err.buf.len() - n.min(err.buf.len());
                        port.saw_output(Stream::Stderr, &err.buf[fresh..]);
                        if port.settings.stderr_log {
                            port.log_stderr(&mut err.buf, false);
                        } else {
                            let data = port.data(std::mem::take(&mut err.buf));
                            port.to_owner(tuple(vec![a("stderr"), data]));
                        }
                    }
                    _ => {
                        port.log_stderr(&mut err.buf, true);
                        err.pipe = None;
                        err.ended = true;
                    }
                }
                Next::Continue
            },
            _ = std::future::poll_fn(|cx| backlog_room.as_mut().map_or(Poll::Pending, |f| f.as_mut().poll(cx))), if !room && output_waits => Next::Continue,
            written = port.stdin.write_some(), if port.stdin.has_work() => {
                port.stdin.wrote(written, &port.me);
                Next::Continue
            },
            s = port.program.wait(), if status.is_none() => {
                status = Some(s);
                Next::Continue
            },
            event = std::future::poll_fn(|cx| port.health.as_mut().map_or(Poll::Pending, |h| h.poll_event(cx))), if port.health.is_some() && stopping.is_none() => port.on_health(event),
            ended = std::future::poll_fn(|cx| stopping.as_mut().map_or(Poll::Pending, |s| s.0.as_mut().poll(cx))), if stopping.is_some() => {
                let Some(stop) = stopping.take().map(|s| s.1) else { return a("normal") };
                return port.stopped(*stop, ended);
            }
        };
        match next {
            Next::Continue => {}
            Next::Exit(reason) => return reason,
            Next::Stop(stop) => {
                if let Some(under_way) = stopping.as_mut() {
                    // One stop at a time: a later caller hears when it is done.
                    under_way.1.more_calls.extend(stop.call);
                    continue;
                }
                port.hang_up(out);
                let mut program = port.program.detach();
                let grace = stop.grace;
                stopping = Some(Box::new((Box::pin(async move { program.terminate(grace).await }), stop)));
            }
        }
    }
}

/// A program that could not start after the checks passed: the port opens,
/// reports the errno as the exit status, and closes, as with erts.
async fn failed_start(mut me: Process, owner: Pid, spec: PortSpec, errno: i32) -> Term {
    let me_term = Term::from(me.pid().clone());
    if spec.exit_status {
        me.send(&owner, tuple(vec![me_term.clone(), tuple(vec![a("exit_status"), int(i64::from(errno))])]));
    }
    if spec.eof {
        me.send(&owner, tuple(vec![me_term, a("eof")]));
        loop {
            match Request::parse(me.recv().await) {
                Request::Close { from } if from == owner => return a("normal"),
                Request::Call(call, CallRequest::Close) => {
                    me.reply(&call, a("true"));
                    return a("normal");
                }
                Request::Exit { from, reason } if from == owner => return reason,
                _ => {}
            }
        }
    }
    a("normal")
}

impl Port {
    /// The port has closed: its owner closed it or exited, its output
    /// ended, or it was stopped. As erts flushes a closing port's queue and
    /// closes the program's stdin, a program that was sent input gets all
    /// of it, then EOF, and has `close_grace` to exit on its own (a filter
    /// that writes its result at EOF: `gzip -c > f`); only then is what is
    /// left of it stopped (SIGTERM, SIGKILL after `kill_timeout`). A
    /// program that was sent nothing (a server, a daemon: it would not
    /// finish on EOF) is stopped at once, as is one stopped by
    /// `portnode:stop`. Nothing of it outlives the handle by more than
    /// `close_grace` + `kill_timeout`.
    ///
    /// The program's stderr, when portnode logs it, is read on meanwhile:
    /// a program that says goodbye on stderr as it is stopped must not die
    /// of SIGPIPE halfway through its cleanup. The log ends at its EOF, or
    /// shortly after the program is gone.
    ///
    /// A terminal is hung up first: the master's last fd is the input's,
    /// closed once that is written (the kernel sends the session leader
    /// SIGHUP), before any stop's SIGTERM.
    fn closed(self: Box<Self>, stderr: Option<(pipe::Receiver, Vec<u8>)>) {
        let Port { mut program, stdin, settings, bytes_out, os_pid, pty, .. } = *self;
        drop(pty);
        let grace = settings.close_grace;
        let linger = !grace.is_zero() && program.is_held() && (bytes_out > 0 || stdin.has_queued());
        if !linger && (stderr.is_none() || !program.is_held()) {
            drop(stdin);
            return; // `program` drops: it is stopped in the background now.
        }
        let name = settings.name;
        child::reapers().spawn(async move {
            let stop = async move {
                if linger {
                    let finished = async {
                        stdin.drain().await;
                        program.wait().await;
                    };
                    tokio::select! {
                        _ = tokio::time::timeout(grace, finished) => {}
                        _ = child::graces_ended() => {}
                    }
                }
                program.stop().await;
            };
            let Some((pipe, buf)) = stderr else { return stop.await };
            let logging = log_until_eof(pipe, buf, &name, os_pid);
            tokio::pin!(stop, logging);
            tokio::select! {
                _ = &mut logging => stop.await,
                _ = &mut stop => {
                    let _ = tokio::time::timeout(Duration::from_millis(100), logging).await;
                }
            }
        });
    }

    /// A terminal is hung up before a stop's SIGTERM, as before a close's:
    /// its master's fds are closed (output is read no more).
    fn hang_up(&mut self, out: &mut Output) {
        if self.pty.take().is_some() {
            out.pipe = None;
            self.stdin = Stdin::new(None);
        }
    }

    fn handle_pid(&self) -> Term {
        Term::from(self.me.pid().clone())
    }

    fn to_owner(&self, msg: Term) {
        self.me.send(&self.owner, tuple(vec![self.handle_pid(), msg]));
    }

    /// The frames' encoder for a remote owner; `None` if the pids do not encode.
    fn outbound(&self) -> Option<&Outbound> {
        self.outbound.get_or_init(|| Outbound::new(self.me.pid(), &self.owner, self.settings.binary)).as_ref()
    }

    fn owner_has_room(&self) -> bool {
        self.owner_has_room_for(0)
    }

    /// The most one read may take: one chunk, or for a remote owner what
    /// its connection can queue before its high-water mark, so that a read
    /// never takes the backlog further past the mark than one chunk.
    /// (Binaries only: data as a list takes twice its bytes and more.)
    fn read_cap(&self) -> usize {
        match &self.owner_backlog {
            Some(b) if self.settings.binary && self.owner.node != self.me.pid().node => b.headroom().clamp(READ_CHUNK, MAX_READ),
            _ => READ_CHUNK,
        }
    }

    /// Room for `extra` bytes more than are queued (frames encoded, not queued yet).
    fn owner_has_room_for(&self, extra: usize) -> bool {
        self.owner_backlog.as_ref().is_none_or(|b| b.has_room_for(extra))
    }

    fn set_owner(&mut self, new: Pid) {
        self.owner_backlog = self.me.node().backlog_of(&new);
        self.outbound = OnceCell::new();
        self.owner = new;
    }

    /// Program output as the owner expects it: a binary, or a list of bytes.
    fn data(&self, bytes: Vec<u8>) -> Term {
        if self.settings.binary {
            etf::binary(bytes)
        } else {
            etf::byte_list(bytes)
        }
    }

    /// Sends the owner the frames waiting in `out`, checking before each
    /// one that it has room; frames the owner has no room for stay in the buffer.
    fn deliver_output(&mut self, out: &mut Output) -> Result<(), Term> {
        // Nothing new to frame: do not scan a partial frame again.
        if !out.fresh && !out.blocked {
            return Ok(());
        }
        out.fresh = false;
        out.blocked = false;
        let used = self.send_frames(out)?;
        out.consume(used);
        if out.blocked {
            return Ok(());
        }
        if out.pipe.is_none() && !out.ended {
            self.last_line = codec::decode_eof(self.settings.framing, &mut out.buf).map(Box::new);
            out.ended = true;
        }
        Ok(())
    }

    /// Sends the frames at the front of `out`'s buffer, checking before
    /// each one that the owner has room (counting what is encoded and not
    /// queued yet); returns the bytes they took up.
    fn send_frames(&mut self, out: &mut Output) -> Result<usize, Term> {
        // A remote owner's frames are encoded here; a local owner gets terms.
        let outbox = self.me.node().outbox_of(&self.owner).zip(self.outbound());
        let mut batch = Vec::new();
        let mut pos = 0;
        let result = loop {
            if !self.owner_has_room_for(batch.len()) {
                out.blocked = true;
                break Ok(pos);
            }
            let cut = match codec::next(self.settings.framing, &out.buf[pos..]) {
                Ok(Some(cut)) => cut,
                Ok(None) => break Ok(pos),
                Err(e) => {
                    warn!(port = %self.me.pid(), program = %self.settings.name, error = %e, "program broke its framing");
                    break Err(a("einval"));
                }
            };
            if pos == 0 && cut.payload == (0..out.buf.len()) {
                // The whole buffer is one frame (stream output): it goes as it was read.
                if let Some((outbox, _)) = &outbox {
                    flush(outbox, &mut batch);
                }
                self.send_whole(outbox.as_ref(), cut.kind, std::mem::take(&mut out.buf));
                break Ok(0);
            }
            let data = &out.buf[pos..][cut.payload.clone()];
            match &outbox {
                Some((outbox, outbound)) => {
                    outbound.push(cut.kind, data, &mut batch);
                    if batch.len() >= BATCH {
                        flush(outbox, &mut batch);
                    }
                }
                None => self.deliver(frame_of(cut.kind, data.to_vec())),
            }
            pos += cut.used;
        };
        if let Some((outbox, _)) = &outbox {
            flush(outbox, &mut batch);
        }
        result
    }

    /// Sends a frame that is a whole read; a binary goes as its own piece, never copied.
    fn send_whole(&self, remote: Option<&(Outbox, &Outbound)>, kind: Kind, bytes: Vec<u8>) {
        match remote {
            Some((outbox, outbound)) if outbound.binary() => {
                let mut head = Vec::with_capacity(128);
                outbound.push_head(kind, bytes.len(), &mut head);
                outbox.send_outgoing(Outgoing::Split { head, payload: bytes });
            }
            Some((outbox, outbound)) => {
                let mut frame = Vec::with_capacity(outbound.frame_len(kind, bytes.len()));
                outbound.push(kind, &bytes, &mut frame);
                flush(outbox, &mut frame);
            }
            None => self.deliver(frame_of(kind, bytes)),
        }
    }

    fn deliver(&self, frame: Frame) {
        let data = match frame {
            Frame::Data(bytes) => self.data(bytes),
            Frame::Line { eol, bytes } => tuple(vec![a(if eol { "eol" } else { "noeol" }), self.data(bytes)]),
        };
        self.to_owner(tuple(vec![a("data"), data]));
    }

    /// The program's output has ended and (when asked for) its status is known.
    fn output_ended(&mut self, exited: Option<ExitStatus>) -> Next {
        let status = exited.unwrap_or_default();
        if exited.is_some() {
            if let Some(stats) = usage::at_exit(&self.program, self.peak.as_deref(), &self.settings.name, self.os_pid, self.settings.exit_stats) {
                self.to_owner(stats);
            }
        }
        if self.settings.exit_status {
            self.to_owner(child::exit_report(status, self.settings.exit_signal));
        }
        if let Some(frame) = self.last_line.take() {
            self.deliver(*frame);
        }
        if self.settings.eof {
            self.to_owner(a("eof"));
            self.done = true;
            return Next::Continue;
        }
        Next::Exit(a("normal"))
    }

    /// Frames `data` for the program and queues it.
    fn write(&mut self, data: &Term) -> Written {
        let mut bytes = Vec::new();
        if etf::iodata(data, &mut bytes).is_none() || !self.settings.output {
            return Written::Bad;
        }
        let Ok(framed) = codec::encode(self.settings.framing, bytes) else { return Written::TooLarge };
        self.bytes_out += framed.len() as u64 - header_len(self.settings.framing);
        self.stdin.queue(framed);
        Written::Queued
    }

    fn handle(&mut self, request: Request) -> Next {
        match request {
            Request::Call(call, request) => self.call(call, request),
            // The port message protocol names the owner (erts checks the pid in the message, not the sender).
            Request::Close { from } if from == self.owner => {
                // erts sends `{Port, closed}` after the port's exit signal.
                let closed = tuple(vec![self.handle_pid(), a("closed")]);
                self.me.after_exit(&self.owner, closed);
                Next::Exit(a("normal"))
            }
            Request::Command { from, data } if from == self.owner => self.command(&data),
            Request::Connect { from, new_owner } if from == self.owner => {
                let old = self.owner.clone();
                self.set_owner(new_owner.clone());
                self.me.link(&new_owner);
                self.me.send(&old, tuple(vec![self.handle_pid(), a("connected")]));
                Next::Continue
            }
            Request::PortCommand(data) => self.command(&data),
            Request::Stop(grace) => Stop::asked(grace, None),
            Request::Exit { from, reason } => {
                // A port closes when its owner exits, for any reason, and when
                // any other linked process exits abnormally.
                if from == self.owner || etf::as_atom(&reason) != Some("normal") {
                    Next::Exit(reason)
                } else {
                    Next::Continue
                }
            }
            // As erts: port protocol naming another process than the owner,
            // and any message that is not port protocol, get the owner an
            // exit signal `badsig` (which ends an owner that does not trap
            // exits, and so the port); the port itself stays open.
            Request::BadProtocol { from } | Request::Close { from } | Request::Command { from, .. } | Request::Connect { from, .. } => {
                debug!(port = %self.me.pid(), from = %from, "port protocol that is bad or names another process: badsig");
                self.badsig()
            }
            Request::NotProtocol(msg) => {
                debug!(port = %self.me.pid(), message = %crate::etf::brief(&msg, crate::etf::LOGGED_TERM), "not port protocol: badsig");
                self.badsig()
            }
            Request::BadStop => self.badsig(),
        }
    }

    /// What erts does with a bad message to a port: `badsig` to the owner.
    fn badsig(&self) -> Next {
        self.me.exit_signal(&self.owner, a("badsig"));
        Next::Continue
    }

    /// Data for the program by message: what is not iodata (or has no way
    /// in) is a bad message (`badsig` to the owner), as for a port.
    /// A packet too large for its header ends it with `einval`.
    fn command(&mut self, data: &Term) -> Next {
        match self.write(data) {
            Written::Queued => Next::Continue,
            Written::Bad => self.badsig(),
            Written::TooLarge => Next::Exit(a("einval")),
        }
    }

    fn log_stderr(&self, buf: &mut Vec<u8>, at_end: bool) {
        log_lines(&self.settings.name, self.os_pid, buf, at_end);
    }

    /// The calls behind the `portnode` API functions.
    fn call(&mut self, call: Call, request: CallRequest) -> Next {
        let reply = match request {
            CallRequest::Close => {
                self.me.reply(&call, a("true"));
                return Next::Exit(a("normal"));
            }
            CallRequest::OsPid => int(i64::from(self.os_pid)),
            CallRequest::KillTimeout => int(self.settings.kill_timeout.as_millis() as i64),
            CallRequest::CloseStdin => {
                if self.pty.is_some() {
                    // A terminal's input ends as a user ends it: Ctrl-D.
                    self.stdin.queue(vec![super::pty::EOF]);
                }
                self.stdin.close();
                a("ok")
            }
            CallRequest::Winsz(Some(size)) => match self.pty.as_ref().map(|fd| super::pty::resize(std::os::fd::AsRawFd::as_raw_fd(fd), size)) {
                Some(Ok(())) => a("ok"),
                _ => a("badarg"),
            },
            CallRequest::Winsz(None) => a("badarg"),
            CallRequest::Stats { full } => usage::stats(&self.program, self.peak.as_deref(), full),
            CallRequest::Info => {
                let items = ["name", "links", "id", "connected", "input", "output", "os_pid"];
                etf::list(items.iter().map(|i| tuple(vec![a(i), self.info(i)])).collect())
            }
            CallRequest::InfoItem(item) => {
                let value = etf::as_atom(&item).map(|i| self.info(i)).unwrap_or_else(|| a("badarg"));
                tuple(vec![item, value])
            }
            CallRequest::Connect(new) => {
                self.set_owner(new.clone());
                self.me.link(&new);
                a("true")
            }
            CallRequest::Stop(grace) => return Stop::asked(grace, Some(call)),
            CallRequest::BadStop => a("badarg"),
            CallRequest::Command(data) => match self.write(&data) {
                Written::Queued => a("true"),
                Written::Bad => a("badarg"),
                Written::TooLarge => return self.too_large(call, a("true")),
            },
            CallRequest::FlowCommand { data, mode } => {
                if mode == FlowMode::NoSuspend && self.stdin.busy() {
                    a("busy")
                } else {
                    match self.write(&data) {
                        Written::Bad => a("badarg"),
                        Written::TooLarge => return self.too_large(call, super::stdin::credit_reply()),
                        Written::Queued => {
                            // Answered now if the port is not busy (or forced), else once it drains.
                            if mode == FlowMode::Force {
                                self.me.reply(&call, super::stdin::credit_reply());
                            } else if let Some(call) = self.stdin.answer_when_not_busy(call) {
                                self.me.reply(&call, super::stdin::credit_reply());
                            }
                            return Next::Continue;
                        }
                    }
                }
            }
            CallRequest::Kill(Some(n)) if self.program.signal(n) => a("ok"),
            CallRequest::Kill(Some(_)) => tuple(vec![a("error"), a("not_running")]),
            CallRequest::Kill(None) => tuple(vec![a("error"), a("badarg")]),
            CallRequest::Unknown(request) => tuple(vec![a("error"), tuple(vec![a("unknown_call"), request])]),
        };
        self.me.reply(&call, reply);
        Next::Continue
    }

    /// As `erlang:port_command/2` on a packet too large for its header: it
    /// returns, and the port exits with `einval`.
    fn too_large(&self, call: Call, reply: Term) -> Next {
        self.me.reply(&call, reply);
        Next::Exit(a("einval"))
    }

    fn info(&self, item: &str) -> Term {
        match item {
            "name" => etf::list(self.settings.name.chars().map(|c| int(i64::from(c as u32))).collect()),
            "links" => etf::list(self.me.node().links_of(self.me.pid()).into_iter().map(Term::from).collect()),
            "id" => int(i64::from(self.me.pid().id)),
            "connected" => Term::from(self.owner.clone()),
            "input" => int(self.bytes_in as i64),
            "output" => int(self.bytes_out as i64),
            "os_pid" => int(i64::from(self.os_pid)),
            _ => a("undefined"),
        }
    }
}

/// Logs the complete lines of a program's stderr in `buf` (all of it at
/// its end), each as one line of portnode's log, at info with the target
/// `program` (shown whatever `--log-level`; the bridge logs these lines at
/// `notice`, so that they show as a plain port's stderr would), with the
/// program's name and OS pid, its text quoted (newlines, escapes and
/// control characters escaped): the program cannot start a log line of its
/// own, nor choose its level. A line longer than 4 KiB is cut.
fn log_lines(program: &str, os_pid: u32, buf: &mut Vec<u8>, at_end: bool) {
    const MAX_LINE: usize = 4096;
    let mut start = 0;
    loop {
        let rest = &buf[start..];
        let (end, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) if i <= MAX_LINE => (start + i, start + i + 1),
            _ if rest.len() >= MAX_LINE => (start + MAX_LINE, start + MAX_LINE),
            _ if at_end && !rest.is_empty() => (buf.len(), buf.len()),
            _ => break,
        };
        let line = String::from_utf8_lossy(&buf[start..end]);
        info!(target: "program", program, os_pid, text = ?line, "program stderr");
        start = next;
    }
    buf.drain(..start);
}

/// Logs a program's stderr until its EOF (every process that held it is gone).
async fn log_until_eof(mut pipe: pipe::Receiver, mut buf: Vec<u8>, program: &str, os_pid: u32) {
    loop {
        match read_some(Some(&mut pipe), &mut buf, READ_CHUNK).await {
            Ok(n) if n > 0 => log_lines(program, os_pid, &mut buf, false),
            _ => break,
        }
    }
    log_lines(program, os_pid, &mut buf, true);
}

/// Queues the frames encoded so far.
fn flush(outbox: &Outbox, batch: &mut Vec<u8>) {
    if !batch.is_empty() {
        // A connection that has ended drops them, as a send to it would.
        outbox.send_outgoing(Outgoing::Frames(std::mem::take(batch)));
    }
}

fn frame_of(kind: Kind, bytes: Vec<u8>) -> Frame {
    match kind {
        Kind::Data => Frame::Data(bytes),
        Kind::Eol => Frame::Line { eol: true, bytes },
        Kind::Noeol => Frame::Line { eol: false, bytes },
    }
}

fn header_len(framing: Framing) -> u64 {
    match framing {
        Framing::Packet(n) => u64::from(n),
        _ => 0,
    }
}

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
use super::output::{read_output, read_some, Got, Output, MAX_READ, READ_CHUNK, SIDE_MIN};
use super::relay::Relay;
use super::side::Side;
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

mod calls;
mod closing;
mod delivery;
mod relayed;
mod start;
mod stop;
mod watched;

use delivery::header_len;
pub use start::run;
use start::started;
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
    /// The owner's relay, which output to its VM goes through in batches (see [`super::relay`]).
    relay: Option<Box<Relay>>,
    /// The side channel to the relay, once offered (see [`super::side`]).
    side: Option<Box<Side>>,
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

/// Serves the port until it closes; returns its exit reason. The program
/// then gets what it was sent, and time to finish (see [`Port::closed`]).
///
/// Its future is most of every held port's task, which tokio allocates
/// in 128-byte lines (see docs/performance.md, "Memory per held
/// program"): an `async` block, not an `async fn`, for an `async fn`
/// keeps its arguments twice; and the wait for the relay at the end, when
/// there is one, is boxed.
fn serve(mut port: Box<Port>, mut outputs: Box<(Output, Output)>) -> impl Future<Output = Term> {
    async move {
        // A local, so dropped before `port` and `outputs` if this task is.
        let _grant = port.program.grant_guard();
        let reason = pump(&mut port, &mut outputs).await;
        // Before any of its fds closes, which may end the program (EOF,
        // SIGPIPE, a hang-up): a closed port's program is not restarted.
        port.program.give_up_grant();
        let reason = port.settle_start(reason);
        // Read no more: on a terminal, closing the master's last fd hangs it up (see `closed`).
        outputs.0.pipe = None;
        let err = &mut outputs.1;
        let stderr = if port.settings.stderr_log { err.pipe.take().map(|pipe| (pipe, std::mem::take(&mut err.buf))) } else { None };
        // Its exit signals go after what the relay has yet to forward (in
        // moments: the program is stopped after).
        let reason = if port.relay_busy() { Box::pin(port.relay_drained(reason)).await } else { reason };
        port.closed(stderr);
        reason
    }
}

async fn pump(port: &mut Port, outputs: &mut (Output, Output)) -> Term {
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
        let backlog_full = !port.backlog_has_room(0);
        // A relay behind: its acknowledgements come to the mailbox.
        let room = !backlog_full && port.relay.as_ref().is_none_or(|r| r.has_room());
        let cap = port.read_cap();
        // Not while output read earlier waits to go first.
        let side = out.buf.is_empty() && !out.blocked && port.may_side();
        // A side channel takes a few runs at a time: the pipe gathers the
        // next meanwhile, so that a run is what came while the relay was busy,
        // not each of the program's writes.
        let side_waits = side && matches!(port.side.as_deref(), Some(Side::Open(_))) && port.relay.as_ref().is_some_and(|r| !r.has_side_room());
        let output_waits = out.blocked || out.pipe.is_some() || err.pipe.is_some();
        // Boxed, and made only while output waits for a busy owner: the
        // loop holds this future all along.
        let mut backlog_room = (backlog_full && output_waits).then(|| port.owner_backlog.clone()).flatten().map(|b| Box::pin(async move { b.room().await }));
        let next = tokio::select! {
            msg = port.me.recv() => port.handle(Request::parse(msg)),
            read = read_output(out, cap, if side { port.side.as_deref_mut() } else { None }), if out.pipe.is_some() && !out.blocked && room && !side_waits => {
                match read {
                    Ok(Got::Spliced(n)) => port.spliced(n),
                    Ok(Got::SideBroken) => {
                        port.side = Some(Box::new(Side::Off));
                        Next::Continue
                    }
                    Ok(Got::Read(n)) if n > 0 => {
                        out.fresh = true;
                        port.bytes_in += n as u64;
                        port.saw_output(Stream::Stdout, &out.buf[out.buf.len() - n..]);
                        if n >= SIDE_MIN && port.side.is_none() && port.may_side() {
                            port.offer_side();
                            super::output::grow_for_side(out);
                        }
                        Next::Continue
                    }
                    _ => {
                        out.fresh = true;
                        out.pipe = None;
                        Next::Continue
                    }
                }
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
            _ = std::future::poll_fn(|cx| backlog_room.as_mut().map_or(Poll::Pending, |f| f.as_mut().poll(cx))), if backlog_room.is_some() => Next::Continue,
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
                // Before the hang-up, which may end it: a stopped program is not restarted.
                port.program.give_up_grant();
                port.hang_up(out);
                let mut program = port.program.detach();
                let grace = stop.grace;
                stopping = Some(Box::new((Box::pin(async move { program.terminate(grace).await }), stop)));
            }
        }
    }
}

impl Port {
    fn handle_pid(&self) -> Term {
        Term::from(self.me.pid().clone())
    }

    fn to_owner(&self, msg: Term) {
        self.send_to(&self.owner, tuple(vec![self.handle_pid(), msg]));
    }

    /// Sends `msg` to `to`: through the relay while it has batches to
    /// forward and `to` is in its VM, so that it comes after them.
    fn send_to(&self, to: &Pid, msg: Term) {
        match self.relay.as_deref().filter(|r| r.busy() && r.serves(to)) {
            Some(relay) => {
                self.me.send(relay.pid(), relay.message(to, msg));
                relay.sent();
            }
            None => self.me.send(to, msg),
        }
    }

    /// Answers a call, after the output sent before it (see [`Port::send_to`]).
    fn reply(&self, call: &Call, reply: Term) {
        self.send_to(&call.from, tuple(vec![call.tag.clone(), reply]));
    }

    /// Sends an exit signal, after the output sent before it: one for the
    /// relay's VM waits until the relay has forwarded all it was sent.
    fn exit_signal(&mut self, to: &Pid, reason: Term) {
        match self.relay.as_deref_mut() {
            Some(relay) if relay.busy() && relay.serves(to) => relay.defer(to.clone(), reason),
            _ => self.me.exit_signal(to, reason),
        }
    }

    /// The frames' encoder for a remote owner; `None` if the pids do not encode.
    fn outbound(&self) -> Option<&Outbound> {
        self.outbound.get_or_init(|| Outbound::new(self.me.pid(), &self.owner, self.settings.binary)).as_ref()
    }
}


//! The port process: one per open port, relaying between the owner and the
//! program with the port protocol's messages.

use super::child::{self, Running};
use super::codec::{self, Frame};
use super::settings::{Framing, PortSpec};
use super::spawn::Spawned;
use crate::etf::{self, a, as_atom, as_int, as_tuple, int, tuple};
use crate::node::process::{Call, Process, Received};
use eetf::{Pid, Term};
use tokio::net::unix::pipe;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::warn;

/// The most read from a program at once (a Linux pipe's default capacity).
const READ_CHUNK: usize = 64 * 1024;

/// What the message handlers decide.
enum Next {
    Continue,
    Exit(Term),
    /// Stop the program (SIGTERM, SIGKILL after the grace period; see
    /// [`Running::terminate`]), answer the call if any, and exit `normal`.
    Stop(Option<Duration>, Option<Call>),
}

struct Port {
    me: Process,
    owner: Pid,
    spec: PortSpec,
    program: Running,
    os_pid: u32,
    stdin: Option<mpsc::UnboundedSender<Vec<u8>>>,
    bytes_in: u64,
    bytes_out: u64,
    /// Output ended and was reported with `eof`: the port stays open for the owner to close.
    done: bool,
    /// An unterminated last line, held back: a port reports it after the exit status.
    last_line: Option<Frame>,
}

/// Runs the port until it closes; returns its exit reason.
pub async fn run(me: Process, owner: Pid, spec: PortSpec, spawned: Spawned) -> Term {
    let Spawned { child, os_pid, stdin, mut stdout, mut stderr } = spawned;
    let stdin = stdin.map(stdin_writer);
    let program = Running::new(child, os_pid, spec.kill_timeout);
    let mut port = Port { me, owner, spec, program, os_pid, stdin, bytes_in: 0, bytes_out: 0, done: false, last_line: None };
    let framing = port.spec.framing;
    let (mut out_buf, mut err_buf) = (Vec::new(), Vec::new());
    let mut status = None;
    loop {
        if stdout.is_none() && stderr.is_none() && !port.done {
            let status = match status {
                Some(status) => status,
                None if port.spec.exit_status || !port.spec.input => port.program.wait().await,
                None => ExitStatus::default(),
            };
            if let Next::Exit(reason) = port.output_ended(status) {
                return reason;
            }
        }
        let room = port.me.node().peer_room(&port.owner.node.name);
        tokio::select! {
            msg = port.me.recv() => match port.handle(msg) {
                Next::Continue => {}
                Next::Exit(reason) => return reason,
                Next::Stop(grace, call) => {
                    port.program.terminate(grace).await;
                    if let Some(call) = call {
                        port.me.reply(&call, a("ok"));
                    }
                    return a("normal");
                }
            },
            read = read_some(stdout.as_ref(), &mut out_buf), if stdout.is_some() && room => match read {
                Ok(n) if n > 0 => {
                    port.bytes_in += n as u64;
                    loop {
                        match codec::decode(framing, &mut out_buf) {
                            Ok(Some(frame)) => port.deliver(frame),
                            Ok(None) => break,
                            Err(e) => {
                                warn!(port = %port.me.pid(), program = %port.spec.name, error = %e, "program broke its framing");
                                return a("einval");
                            }
                        }
                    }
                }
                _ => {
                    port.last_line = codec::decode_eof(framing, &mut out_buf);
                    stdout = None;
                }
            },
            _ = tokio::time::sleep(std::time::Duration::from_millis(1)), if stdout.is_some() && !room => {}
            read = read_some(stderr.as_ref(), &mut err_buf), if stderr.is_some() => match read {
                Ok(n) if n > 0 => {
                    let data = port.data(std::mem::take(&mut err_buf));
                    port.to_owner(tuple(vec![a("stderr"), data]));
                }
                _ => stderr = None,
            },
            s = port.program.wait(), if status.is_none() => status = Some(s),
        }
    }
}

/// A program that could not start after the checks passed: the port opens,
/// reports the errno as the exit status, and closes, as with erts.
pub async fn failed_start(mut me: Process, owner: Pid, spec: PortSpec, errno: i32) -> Term {
    let me_term = Term::from(me.pid().clone());
    if spec.exit_status {
        me.send(&owner, tuple(vec![me_term.clone(), tuple(vec![a("exit_status"), int(i64::from(errno))])]));
    }
    if spec.eof {
        me.send(&owner, tuple(vec![me_term, a("eof")]));
        loop {
            let msg = me.recv().await;
            if let Some([_, cmd]) = as_tuple(&msg) {
                if as_atom(cmd) == Some("close") {
                    return a("normal");
                }
            }
        }
    }
    a("normal")
}

thread_local! {
    /// One read buffer for every port on this thread: an idle port holds
    /// none, so thousands of open programs cost little memory (and forking
    /// the next one stays cheap).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; READ_CHUNK]);
}

/// Waits until `pipe` is readable, then appends what it has to `out`.
/// Cancel-safe: nothing is read until the bytes can be kept.
async fn read_some(pipe: Option<&pipe::Receiver>, out: &mut Vec<u8>) -> std::io::Result<usize> {
    let Some(pipe) = pipe else { return std::future::pending().await };
    loop {
        pipe.readable().await?;
        let read = SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let n = pipe.try_read(&mut scratch[..])?;
            out.extend_from_slice(&scratch[..n]);
            Ok::<usize, std::io::Error>(n)
        });
        match read {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// Writes to the program's stdin from a queue; dropping the queue closes stdin.
fn stdin_writer(mut pipe: pipe::Sender) -> mpsc::UnboundedSender<Vec<u8>> {
    use tokio::io::AsyncWriteExt;
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(data) = rx.recv().await {
            if pipe.write_all(&data).await.is_err() {
                // The program closed its stdin (or exited): nothing more to write.
                break;
            }
        }
    });
    tx
}

impl Port {
    fn handle_pid(&self) -> Term {
        Term::from(self.me.pid().clone())
    }

    fn to_owner(&self, msg: Term) {
        self.me.send(&self.owner, tuple(vec![self.handle_pid(), msg]));
    }

    /// Program output as the owner expects it: a binary, or a list of bytes.
    fn data(&self, bytes: Vec<u8>) -> Term {
        if self.spec.binary {
            etf::binary(bytes)
        } else {
            etf::byte_list(bytes)
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
    fn output_ended(&mut self, status: ExitStatus) -> Next {
        if self.spec.exit_status {
            self.to_owner(child::exit_report(status, self.spec.exit_signal));
        }
        if let Some(frame) = self.last_line.take() {
            self.deliver(frame);
        }
        if self.spec.eof {
            self.to_owner(a("eof"));
            self.done = true;
            return Next::Continue;
        }
        Next::Exit(a("normal"))
    }

    fn write(&mut self, data: &Term) -> bool {
        let mut bytes = Vec::new();
        if etf::iodata(data, &mut bytes).is_none() || !self.spec.output {
            return false;
        }
        let Ok(framed) = codec::encode(self.spec.framing, bytes) else { return false };
        self.bytes_out += framed.len() as u64 - header_len(self.spec.framing);
        if let Some(stdin) = &self.stdin {
            let _ = stdin.send(framed);
        }
        true
    }

    fn handle(&mut self, msg: Term) -> Next {
        match crate::node::process::classify(msg) {
            Received::Call(call) => self.call(call),
            Received::Cast(_) => Next::Continue,
            Received::Other(msg) => self.message(msg),
        }
    }

    /// The port message protocol, and the EXIT signals a port reacts to.
    fn message(&mut self, msg: Term) -> Next {
        match as_tuple(&msg) {
            Some([Term::Pid(from), cmd]) if *from == self.owner => match (as_atom(cmd), as_tuple(cmd)) {
                (Some("close"), _) => {
                    // erts sends `{Port, closed}` after the port's exit signal.
                    let closed = tuple(vec![self.handle_pid(), a("closed")]);
                    self.me.after_exit(&self.owner, closed);
                    Next::Exit(a("normal"))
                }
                (_, Some([op, data])) if as_atom(op) == Some("command") => self.command(data),
                (_, Some([op, Term::Pid(new)])) if as_atom(op) == Some("connect") => {
                    let old = std::mem::replace(&mut self.owner, new.clone());
                    self.me.link(new);
                    self.me.send(&old, tuple(vec![self.handle_pid(), a("connected")]));
                    Next::Continue
                }
                _ => Next::Exit(a("badsig")),
            },
            Some([tag, data]) if as_atom(tag) == Some("$port_command") => self.command(data),
            Some([tag, grace]) if as_atom(tag) == Some("$portnode_stop") => match grace_period(grace) {
                Some(grace) => Next::Stop(grace, None),
                None => Next::Exit(a("badsig")),
            },
            Some([tag, Term::Pid(from), reason]) if as_atom(tag) == Some("EXIT") => {
                // A port closes when its owner exits, for any reason, and when
                // any other linked process exits abnormally.
                if *from == self.owner || as_atom(reason) != Some("normal") {
                    Next::Exit(reason.clone())
                } else {
                    Next::Continue
                }
            }
            _ => {
                warn!(port = %self.me.pid(), message = %msg, "port ignored a message that is not port protocol");
                Next::Continue
            }
        }
    }

    /// Data for the program by message: what is not iodata (or has no way
    /// in) ends the port with `badsig`, as it does a port.
    fn command(&mut self, data: &Term) -> Next {
        if self.write(data) { Next::Continue } else { Next::Exit(a("badsig")) }
    }

    /// The calls behind the `portnode` API functions.
    fn call(&mut self, call: Call) -> Next {
        let request = call.request.clone();
        let (reply, next) = match (as_atom(&request), as_tuple(&request)) {
            (Some("close"), _) => (a("true"), Next::Exit(a("normal"))),
            (Some("os_pid"), _) => (int(i64::from(self.os_pid)), Next::Continue),
            (Some("kill_timeout"), _) => (int(self.spec.kill_timeout.as_millis() as i64), Next::Continue),
            (Some("close_stdin"), _) => {
                self.stdin = None;
                (a("ok"), Next::Continue)
            }
            (Some("info"), _) => {
                let items = ["name", "links", "id", "connected", "input", "output", "os_pid"];
                let list = items.iter().map(|i| tuple(vec![a(i), self.info(i)])).collect();
                (etf::list(list), Next::Continue)
            }
            (_, Some([op, item])) if as_atom(op) == Some("info") => {
                let value = as_atom(item).map(|i| self.info(i)).unwrap_or_else(|| a("badarg"));
                (tuple(vec![item.clone(), value]), Next::Continue)
            }
            (_, Some([op, Term::Pid(new)])) if as_atom(op) == Some("connect") => {
                self.owner = new.clone();
                self.me.link(new);
                (a("true"), Next::Continue)
            }
            (_, Some([op, grace])) if as_atom(op) == Some("stop") => match grace_period(grace) {
                Some(grace) => return Next::Stop(grace, Some(call)),
                None => (a("badarg"), Next::Continue),
            },
            (_, Some([op, data])) if as_atom(op) == Some("command") => {
                if self.write(data) { (a("true"), Next::Continue) } else { (a("badarg"), Next::Continue) }
            }
            (_, Some([op, sig])) if as_atom(op) == Some("kill") => {
                let number = as_int(sig).and_then(|n| i32::try_from(n).ok()).or_else(|| as_atom(sig).and_then(child::signal_number));
                match number {
                    Some(n) if self.program.signal(n) => (a("ok"), Next::Continue),
                    Some(_) => (tuple(vec![a("error"), a("not_running")]), Next::Continue),
                    None => (tuple(vec![a("error"), a("badarg")]), Next::Continue),
                }
            }
            _ => (tuple(vec![a("error"), tuple(vec![a("unknown_call"), request.clone()])]), Next::Continue),
        };
        self.me.reply(&call, reply);
        next
    }

    fn info(&self, item: &str) -> Term {
        match item {
            "name" => etf::list(self.spec.name.chars().map(|c| int(i64::from(c as u32))).collect()),
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

/// A stop's grace period: milliseconds, `brutal_kill` (none) or `infinity`.
pub(crate) fn grace_period(term: &Term) -> Option<Option<Duration>> {
    match (as_int(term), as_atom(term)) {
        (Some(ms), _) if ms >= 0 => Some(Some(Duration::from_millis(ms as u64))),
        (_, Some("brutal_kill")) => Some(Some(Duration::ZERO)),
        (_, Some("infinity")) => Some(None),
        _ => None,
    }
}

fn header_len(framing: Framing) -> u64 {
    match framing {
        Framing::Packet(n) => u64::from(n),
        _ => 0,
    }
}

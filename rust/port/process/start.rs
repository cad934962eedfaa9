//! A port's start: waiting for its program to run, telling whoever waits,
//! and what a program that did not start leaves (an exit status, a log
//! line on its owner's node).

use super::*;

/// Runs the port: waits for its program to start, tells `on_start` (once
/// it is ready, if its settings say how it tells), then serves it until it
/// closes; returns its exit reason.
pub fn run(me: Process, owner: Pid, spec: PortSpec, starting: Starting, notify: Option<NotifySocket>, on_start: OnStart) -> impl Future<Output = Term> + Send {
    launched(Box::new(Launch { me, owner, spec, notify, on_start }), Box::new(starting))
}

/// What a port starts with, on the heap: the port's task holds a pointer
/// to it, not copies (an `async fn` keeps its arguments apart from what it
/// moves them into, and a task is as large as its largest state).
pub(super) struct Launch {
    me: Process,
    owner: Pid,
    spec: PortSpec,
    notify: Option<NotifySocket>,
    on_start: OnStart,
}

pub(super) async fn launched(launch: Box<Launch>, starting: Box<Starting>) -> Term {
    // Messages wait in the mailbox meanwhile (about as long as an exec takes).
    // Boxed: the start is over in an exec's time; its state must not size
    // the task that serves the port from then on.
    // Out of its box by a call: `(*starting)` would move it out and leave
    // the box's memory with the task, for as long as the port lives.
    let outcome = Box::pin(unboxed(starting).started()).await;
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

/// What `b` holds, its memory freed now.
fn unboxed<T>(b: Box<T>) -> T {
    *b
}

/// A program that did not start.
pub(super) enum Failed {
    /// It failed before exec, with this errno: the port reports it as its exit status.
    InChild(Box<Launch>, i32),
    /// portnode could not start it: the handle's exit reason.
    Reason(Term),
}

impl Port {
    /// The port for a program that has started, with its output pipes, or
    /// why there is none. Tells `on_start` either way.
    pub(super) fn start(launch: Box<Launch>, outcome: std::io::Result<Spawned>) -> Result<(Box<Port>, Box<(Output, Output)>), Failed> {
        let Launch { me, owner, mut spec, notify, on_start } = *launch;
        let spawned = match outcome {
            Ok(spawned) => spawned,
            Err(e) if crate::spawner::client::is_not_restarted(&e) => {
                // A restart grant given up: nothing ran, and nothing is to be said but that.
                me.unlink(&owner);
                started(&me, on_start, Err(a("not_restarted")));
                return Err(Failed::Reason(a("normal")));
            }
            Err(e) => {
                report_child_failure(&me, &owner, &spec.name, &e);
                return Err(match spawn::failed_in_child(&e) {
                    // Whoever waits for it to be ready hears it never will be.
                    Some(errno) if spec.lifecycle.ready.is_some() && matches!(on_start, OnStart::Reply(_) | OnStart::Tell(_) | OnStart::Granted(_)) => {
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
            on_start @ (OnStart::Reply(_) | OnStart::Tell(_) | OnStart::Granted(_)) if health.as_ref().is_some_and(|h| h.awaiting_ready()) => Some(Box::new(on_start)),
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
        let relay = spec.relay.take().map(|pid| Box::new(Relay::new(pid)));
        let settings = Settings::of(spec);
        let port = Box::new(Port { me, owner, owner_backlog, outbound: OnceCell::new(), settings, program, os_pid, stdin, bytes_in: 0, bytes_out: 0, done: false, last_line: None, health, awaiting_start, pty, peak, relay, side: None });
        Ok((port, Box::new((Output::new(stdout), Output::new(stderr)))))
    }
}

/// A program whose child failed before exec (chdir, setgid, setuid,
/// setrlimit, execve): the owner's node logs it, naming the program, the
/// step and the errno (through its `logger_proxy`, as OTP forwards log
/// events between nodes), and so does portnode. What the owner sees of it
/// otherwise (an exit status, or an error from the open) is as erts gives it.
pub(super) fn report_child_failure(me: &Process, owner: &Pid, program: &str, e: &std::io::Error) {
    let Some(step) = crate::program::step::step_of(e) else { return };
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
pub(super) fn started(me: &Process, on_start: OnStart, outcome: Result<Option<u32>, Term>) {
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
        OnStart::Granted(owner) => {
            let outcome = match outcome {
                Ok(os_pid) => tuple(vec![a("ok"), os_pid.map_or_else(|| a("undefined"), |p| int(i64::from(p)))]),
                Err(reason) => tuple(vec![a("error"), reason]),
            };
            me.send(&owner, tuple(vec![a("$portnode_granted"), Term::from(me.pid().clone()), outcome]));
        }
    }
}

/// A program that could not start after the checks passed: the port opens,
/// reports the errno as the exit status, and closes, as with erts.
pub(super) async fn failed_start(mut me: Process, owner: Pid, spec: PortSpec, errno: i32) -> Term {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, F: Future>(_: impl Fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every held port is a task of this future, which tokio allocates with
    /// 104 bytes of its own (header, stage, trailer), after portnode's
    /// 16-byte wrapper (`Node::spawn`), in 128-byte lines: up to 264 bytes,
    /// a task is 384 bytes; 8 more and it is 512, 128 bytes more per held
    /// program.
    #[test]
    fn a_port_task_fits_in_three_lines() {
        let size = future_size(launched);
        assert!(size <= 264, "a port's future is {size} bytes: its task takes 4 or more 128-byte lines (see docs/performance.md, memory per held program)");
    }
}

//! What a port process accepts, parsed once at the door: the port message
//! protocol, portnode's own messages, exit signals, and the calls behind
//! the `portnode` API.

use crate::etf::{as_atom, as_int, as_tuple, take};
use crate::node::process::{classify, Call, Received};
use eetf::{Pid, Term};
use std::time::Duration;

/// A message in a port's mailbox.
pub enum Request {
    /// `{From, close}`.
    Close { from: Pid },
    /// `{From, {command, Data}}`.
    Command { from: Pid, data: Term },
    /// `{From, {connect, NewOwner}}`.
    Connect { from: Pid, new_owner: Pid },
    /// `{From, Other}`: not port protocol (`badsig`).
    BadProtocol { from: Pid },
    /// `{'$port_command', Data}`: `portnode:port_command` within its credit.
    PortCommand(Term),
    /// `{'$portnode_stop', Grace}` (a supervisor inside portnode stopping a child).
    Stop(Option<Duration>),
    /// `{'$portnode_stop', Bad}`.
    BadStop,
    /// `{'EXIT', From, Reason}`: a linked process went.
    Exit { from: Pid, reason: Term },
    /// A gen_server call.
    Call(Call, CallRequest),
    /// `'$portnode_relayed'`: the owner's relay has forwarded a batch; or
    /// `{'$portnode_relayed', N}`: N batches.
    Relayed(u32),
    /// A cast, or anything else: not port protocol (`badsig`, as erts).
    NotProtocol(Term),
}

/// The calls a port answers.
pub enum CallRequest {
    Close,
    OsPid,
    KillTimeout,
    CloseStdin,
    Info,
    InfoItem(Term),
    Connect(Pid),
    Stop(Option<Duration>),
    BadStop,
    /// `{command, Data}`: queue the data, answer `true` (or `badarg`).
    Command(Term),
    /// `{command, Data, Mode}`: queue the data when the port is not busy
    /// and answer `{ok, Credit}` once it is not (`false`); at once `busy`
    /// when it is (`true`: nosuspend); queue it and answer at once
    /// (`force`). See `portnode:port_command/3`.
    FlowCommand { data: Term, mode: FlowMode },
    /// `{kill, Signal}`: `None` if the signal is not one.
    Kill(Option<i32>),
    /// `{winsz, Rows, Cols}`: `None` if the size is not one.
    Winsz(Option<super::pty::Size>),
    /// `stats`, or `{stats, full}` (with the memory's peak).
    Stats { full: bool },
    Unknown(Term),
}

impl Request {
    pub fn parse(msg: Term) -> Request {
        let mut msg = match classify(msg) {
            Received::Call(mut call) => {
                let request = CallRequest::parse(&mut call.request);
                return Request::Call(call, request);
            }
            Received::Cast(msg) => return Request::NotProtocol(msg),
            Received::Other(msg) => msg,
        };
        // The data of a command is moved out, never copied: it may be large.
        if let Term::Tuple(t) = &mut msg {
            match t.elements.as_mut_slice() {
                [Term::Pid(from), Term::Tuple(cmd)] => {
                    if let [op, data] = cmd.elements.as_mut_slice()
                        && as_atom(op) == Some("command")
                    {
                        return Request::Command { from: from.clone(), data: take(data) };
                    }
                }
                [tag, data] if as_atom(tag) == Some("$port_command") => return Request::PortCommand(take(data)),
                _ => {}
            }
        }
        if as_atom(&msg) == Some("$portnode_relayed") {
            return Request::Relayed(1);
        }
        if let Some([tag, Term::FixInteger(n)]) = as_tuple(&msg)
            && as_atom(tag) == Some("$portnode_relayed")
        {
            // A relay of this application never acknowledges more than it was sent.
            return Request::Relayed(u32::try_from(n.value).unwrap_or(0));
        }
        match as_tuple(&msg) {
            Some([Term::Pid(from), cmd]) => {
                let from = from.clone();
                match (as_atom(cmd), as_tuple(cmd)) {
                    (Some("close"), _) => Request::Close { from },
                    (_, Some([op, Term::Pid(new)])) if as_atom(op) == Some("connect") => {
                        Request::Connect { from, new_owner: new.clone() }
                    }
                    _ => Request::BadProtocol { from },
                }
            }
            Some([tag, grace]) if as_atom(tag) == Some("$portnode_stop") => match grace_period(grace) {
                Some(grace) => Request::Stop(grace),
                None => Request::BadStop,
            },
            Some([tag, Term::Pid(from), reason]) if as_atom(tag) == Some("EXIT") => {
                Request::Exit { from: from.clone(), reason: reason.clone() }
            }
            _ => Request::NotProtocol(msg),
        }
    }
}

impl CallRequest {
    /// Parses a call's request, moving its data out of it.
    fn parse(request: &mut Term) -> CallRequest {
        if let Some(op) = as_atom(request) {
            return match op {
                "close" => CallRequest::Close,
                "os_pid" => CallRequest::OsPid,
                "kill_timeout" => CallRequest::KillTimeout,
                "close_stdin" => CallRequest::CloseStdin,
                "info" => CallRequest::Info,
                "stats" => CallRequest::Stats { full: false },
                _ => CallRequest::Unknown(take(request)),
            };
        }
        let Term::Tuple(t) = request else { return CallRequest::Unknown(take(request)) };
        match t.elements.as_mut_slice() {
            [op, item] if as_atom(op) == Some("info") => CallRequest::InfoItem(item.clone()),
            [op, full] if as_atom(op) == Some("stats") && as_atom(full) == Some("full") => CallRequest::Stats { full: true },
            [op, rows, cols] if as_atom(op) == Some("winsz") => {
                CallRequest::Winsz(as_int(rows).zip(as_int(cols)).and_then(|(r, c)| super::pty::Size::of(r, c)))
            }
            [op, Term::Pid(new)] if as_atom(op) == Some("connect") => CallRequest::Connect(new.clone()),
            [op, grace] if as_atom(op) == Some("stop") => match grace_period(grace) {
                Some(grace) => CallRequest::Stop(grace),
                None => CallRequest::BadStop,
            },
            [op, data] if as_atom(op) == Some("command") => CallRequest::Command(take(data)),
            [op, data, mode] if as_atom(op) == Some("command") => {
                let mode = match as_atom(mode) {
                    Some("true") => FlowMode::NoSuspend,
                    Some("force") => FlowMode::Force,
                    _ => FlowMode::Wait,
                };
                CallRequest::FlowCommand { data: take(data), mode }
            }
            [op, sig] if as_atom(op) == Some("kill") => {
                let number = as_int(sig)
                    .and_then(|n| i32::try_from(n).ok())
                    .or_else(|| as_atom(sig).and_then(super::child::signal_number));
                CallRequest::Kill(number)
            }
            _ => CallRequest::Unknown(take(request)),
        }
    }
}

/// What a flow-controlled command does on a busy port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowMode {
    Wait,
    NoSuspend,
    Force,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etf::{a, int, tuple};

    fn pid(id: u32) -> Pid {
        Pid::new("vm@host", id, 0, 1)
    }

    #[test]
    fn the_port_protocol() {
        let from = Term::from(pid(1));
        assert!(matches!(Request::parse(tuple(vec![from.clone(), a("close")])), Request::Close { .. }));
        let cmd = tuple(vec![from.clone(), tuple(vec![a("command"), a("x")])]);
        assert!(matches!(Request::parse(cmd), Request::Command { .. }));
        let connect = tuple(vec![from.clone(), tuple(vec![a("connect"), Term::from(pid(2))])]);
        assert!(matches!(Request::parse(connect), Request::Connect { new_owner, .. } if new_owner == pid(2)));
        assert!(matches!(Request::parse(tuple(vec![from.clone(), a("nonsense")])), Request::BadProtocol { .. }));
        let exit = tuple(vec![a("EXIT"), from, a("normal")]);
        assert!(matches!(Request::parse(exit), Request::Exit { .. }));
        assert!(matches!(Request::parse(a("stray")), Request::NotProtocol(_)));
    }

    #[test]
    fn stop_and_grace() {
        let stop = |g: Term| Request::parse(tuple(vec![a("$portnode_stop"), g]));
        assert!(matches!(stop(int(100)), Request::Stop(Some(d)) if d == Duration::from_millis(100)));
        assert!(matches!(stop(a("brutal_kill")), Request::Stop(Some(Duration::ZERO))));
        assert!(matches!(stop(a("infinity")), Request::Stop(None)));
        assert!(matches!(stop(int(-1)), Request::BadStop));
    }

    #[test]
    fn calls() {
        let call = |req: Term| {
            let msg = tuple(vec![a("$gen_call"), tuple(vec![Term::from(pid(1)), a("tag")]), req]);
            match Request::parse(msg) {
                Request::Call(_, r) => r,
                _ => panic!("not a call"),
            }
        };
        assert!(matches!(call(a("os_pid")), CallRequest::OsPid));
        assert!(matches!(call(tuple(vec![a("kill"), a("sigterm")])), CallRequest::Kill(Some(15))));
        assert!(matches!(call(tuple(vec![a("kill"), a("nosuch")])), CallRequest::Kill(None)));
        let flow = call(tuple(vec![a("command"), a("d"), a("true")]));
        assert!(matches!(flow, CallRequest::FlowCommand { mode: FlowMode::NoSuspend, .. }));
        let force = call(tuple(vec![a("command"), a("d"), a("force")]));
        assert!(matches!(force, CallRequest::FlowCommand { mode: FlowMode::Force, .. }));
        assert!(matches!(Request::parse(tuple(vec![a("a"), a("b")])), Request::NotProtocol(_)));
        assert!(matches!(call(a("what")), CallRequest::Unknown(_)));
        assert!(matches!(call(a("stats")), CallRequest::Stats { full: false }));
        assert!(matches!(call(tuple(vec![a("stats"), a("full")])), CallRequest::Stats { full: true }));
        assert!(matches!(call(tuple(vec![a("winsz"), int(40), int(132)])), CallRequest::Winsz(Some(s)) if (s.rows, s.cols) == (40, 132)));
        assert!(matches!(call(tuple(vec![a("winsz"), int(0), int(132)])), CallRequest::Winsz(None)));
    }
}

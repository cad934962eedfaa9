//! What the `portnode` control server accepts, parsed once at the door.

use crate::etf::{as_atom, take};
use crate::node::process::{classify, Call, Received};
use eetf::{Pid, Term};

/// A message in the control server's mailbox.
pub enum Request {
    Call(Call, CallRequest),
    Cast,
    Other(Term),
}

/// The calls the control server answers.
pub enum CallRequest {
    Ping,
    Info,
    /// For benchmarks: how many casts it has received.
    CastCount,
    SpawnProbe { report_to: Pid },
    /// `{open_port, Owner, PortName, Settings}`, or with a fifth element:
    /// what the caller's VM sends of itself (its directory, its environment).
    /// Answered `{ok, Handle, OsPid}` once the program runs. The same with
    /// `open_port_nowait`: answered `{ok, Handle}` at once, as
    /// `erlang:open_port/2` returns before the program runs (`wait` false).
    OpenPort { owner: Pid, name: Term, settings: Term, caller: Option<Term>, wait: bool },
    StartSupervisor { parent: Pid, flags: Term, children: Term },
    Unknown(Term),
}

impl Request {
    pub fn parse(msg: Term) -> Request {
        match classify(msg) {
            Received::Call(mut call) => {
                let request = CallRequest::parse(&mut call.request);
                Request::Call(call, request)
            }
            Received::Cast(_) => Request::Cast,
            Received::Other(msg) => Request::Other(msg),
        }
    }
}

impl CallRequest {
    /// Parses a call's request, moving its terms out of it (an open's
    /// settings may be hundreds of megabytes of arguments).
    fn parse(request: &mut Term) -> CallRequest {
        match as_atom(request) {
            Some("ping") => return CallRequest::Ping,
            Some("info") => return CallRequest::Info,
            Some("cast_count") => return CallRequest::CastCount,
            _ => {}
        }
        let Term::Tuple(t) = request else { return CallRequest::Unknown(take(request)) };
        match t.elements.as_mut_slice() {
            [op, Term::Pid(report_to)] if as_atom(op) == Some("spawn_probe") => CallRequest::SpawnProbe { report_to: report_to.clone() },
            [op, Term::Pid(owner), name, settings, caller @ ..] if caller.len() <= 1 && matches!(as_atom(op), Some("open_port" | "open_port_nowait")) => {
                let wait = as_atom(op) == Some("open_port");
                let caller = caller.first_mut().map(take);
                CallRequest::OpenPort { owner: owner.clone(), name: take(name), settings: take(settings), caller, wait }
            }
            [op, Term::Pid(parent), flags, children] if as_atom(op) == Some("start_supervisor") => {
                CallRequest::StartSupervisor { parent: parent.clone(), flags: take(flags), children: take(children) }
            }
            _ => CallRequest::Unknown(take(request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etf::{a, tuple};

    fn parse(req: Term) -> CallRequest {
        let from = Term::from(Pid::new("vm@h", 1, 0, 1));
        match Request::parse(tuple(vec![a("$gen_call"), tuple(vec![from, a("t")]), req])) {
            Request::Call(_, r) => r,
            _ => panic!("not a call"),
        }
    }

    #[test]
    fn control_calls() {
        let owner = Term::from(Pid::new("vm@h", 2, 0, 1));
        assert!(matches!(parse(a("ping")), CallRequest::Ping));
        let open = tuple(vec![a("open_port"), owner.clone(), a("n"), a("s")]);
        assert!(matches!(parse(open), CallRequest::OpenPort { caller: None, .. }));
        let with_caller = tuple(vec![a("open_port"), owner.clone(), a("n"), a("s"), a("c")]);
        assert!(matches!(parse(with_caller), CallRequest::OpenPort { caller: Some(_), .. }));
        // An owner that is not a pid is not an open_port request.
        let bad = tuple(vec![a("open_port"), a("me"), a("n"), a("s")]);
        assert!(matches!(parse(bad), CallRequest::Unknown(_)));
        let sup = tuple(vec![a("start_supervisor"), owner, a("f"), a("c")]);
        assert!(matches!(parse(sup), CallRequest::StartSupervisor { .. }));
    }
}

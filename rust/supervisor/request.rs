//! What a supervisor inside portnode accepts, parsed once at the door: the
//! calls `supervisor`'s API functions make, and the messages of its
//! children's ports and its parent.

use crate::etf::{as_atom, as_tuple};
use crate::node::process::{classify, Call, Received};
use eetf::{Pid, Term};

/// A message in a supervisor's mailbox.
pub enum Request {
    Call(Call, CallRequest),
    /// `{'EXIT', From, Reason}`: the parent or a child's handle went.
    Exit { from: Pid, reason: Term },
    /// `{Handle, Event}`: what a child's port sends its owner.
    PortEvent { from: Pid, event: Term },
    /// `{'$portnode_retry', Id}`: try again to restart a child.
    Retry(Term),
    /// `{'$portnode_granted', Handle, Outcome}`: a restart grant's port says
    /// whether its program ran (`Some(os_pid)`, `None` for one that failed
    /// before exec) or not (`Err`).
    Granted { from: Pid, outcome: Result<Option<u32>, Term> },
    Ignored(Term),
}

/// The calls `supervisor:which_children/1` and the like make.
pub enum CallRequest {
    WhichChildren,
    CountChildren,
    GetCallbackModule,
    TerminateChild(Term),
    RestartChild(Term),
    DeleteChild(Term),
    GetChildspec(Term),
    StartChild(Term),
    Unknown(Term),
}

impl Request {
    pub fn parse(msg: Term) -> Request {
        let msg = match classify(msg) {
            Received::Call(call) => {
                let request = CallRequest::parse(&call.request);
                return Request::Call(call, request);
            }
            Received::Cast(msg) | Received::Other(msg) => msg,
        };
        match as_tuple(&msg) {
            Some([tag, Term::Pid(from), reason]) if as_atom(tag) == Some("EXIT") => {
                Request::Exit { from: from.clone(), reason: reason.clone() }
            }
            Some([Term::Pid(from), event]) => Request::PortEvent { from: from.clone(), event: event.clone() },
            Some([tag, id]) if as_atom(tag) == Some("$portnode_retry") => Request::Retry(id.clone()),
            Some([tag, Term::Pid(from), outcome]) if as_atom(tag) == Some("$portnode_granted") => Request::Granted { from: from.clone(), outcome: granted(outcome) },
            _ => Request::Ignored(msg),
        }
    }

    /// What `handle` sent its owner, if `msg` is a port event of it (`{Handle, Event}`).
    pub fn event_of(msg: &Term, handle: &Pid) -> Option<Term> {
        match as_tuple(msg) {
            Some([Term::Pid(from), event]) if from == handle => Some(event.clone()),
            _ => None,
        }
    }

    /// The outcome, if this is what grant port `handle` says of its program.
    pub fn granted_of(msg: &Term, handle: &Pid) -> Option<Result<Option<u32>, Term>> {
        match as_tuple(msg) {
            Some([tag, Term::Pid(from), outcome]) if as_atom(tag) == Some("$portnode_granted") && from == handle => Some(granted(outcome)),
            _ => None,
        }
    }

    /// True if this is the exit signal of `handle`.
    pub fn is_exit_of(msg: &Term, handle: &Pid) -> bool {
        matches!(as_tuple(msg), Some([tag, Term::Pid(from), _]) if as_atom(tag) == Some("EXIT") && from == handle)
    }
}

/// `{ok, OsPid | undefined}` or `{error, Reason}`, as a grant's port sends it.
fn granted(outcome: &Term) -> Result<Option<u32>, Term> {
    match as_tuple(outcome) {
        Some([ok, Term::FixInteger(n)]) if as_atom(ok) == Some("ok") => Ok(u32::try_from(n.value).ok()),
        Some([ok, _]) if as_atom(ok) == Some("ok") => Ok(None),
        Some([error, reason]) if as_atom(error) == Some("error") => Err(reason.clone()),
        _ => Err(outcome.clone()),
    }
}

impl CallRequest {
    fn parse(request: &Term) -> CallRequest {
        match (as_atom(request), as_tuple(request)) {
            (Some("which_children"), _) => CallRequest::WhichChildren,
            (Some("count_children"), _) => CallRequest::CountChildren,
            (Some("get_callback_module"), _) => CallRequest::GetCallbackModule,
            (_, Some([op, arg])) => match as_atom(op) {
                Some("terminate_child") => CallRequest::TerminateChild(arg.clone()),
                Some("restart_child") => CallRequest::RestartChild(arg.clone()),
                Some("delete_child") => CallRequest::DeleteChild(arg.clone()),
                Some("get_childspec") => CallRequest::GetChildspec(arg.clone()),
                Some("start_child") => CallRequest::StartChild(arg.clone()),
                _ => CallRequest::Unknown(request.clone()),
            },
            _ => CallRequest::Unknown(request.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etf::{a, tuple};

    fn call(req: Term) -> CallRequest {
        let from = Term::from(Pid::new("vm@h", 1, 0, 1));
        match Request::parse(tuple(vec![a("$gen_call"), tuple(vec![from, a("t")]), req])) {
            Request::Call(_, r) => r,
            _ => panic!("not a call"),
        }
    }

    #[test]
    fn supervisor_calls() {
        assert!(matches!(call(a("which_children")), CallRequest::WhichChildren));
        assert!(matches!(call(tuple(vec![a("terminate_child"), a("x")])), CallRequest::TerminateChild(_)));
        assert!(matches!(call(tuple(vec![a("start_child"), a("x")])), CallRequest::StartChild(_)));
        assert!(matches!(call(tuple(vec![a("frobnicate"), a("x")])), CallRequest::Unknown(_)));
    }

    #[test]
    fn messages() {
        let h = Pid::new("pn@h", 7, 0, 1);
        let exit = tuple(vec![a("EXIT"), Term::from(h.clone()), a("normal")]);
        assert!(Request::is_exit_of(&exit, &h));
        assert!(matches!(Request::parse(exit), Request::Exit { .. }));
        let event = tuple(vec![Term::from(h), tuple(vec![a("exit_status"), crate::etf::int(1)])]);
        assert!(matches!(Request::parse(event), Request::PortEvent { .. }));
        assert!(matches!(Request::parse(tuple(vec![a("$portnode_retry"), a("id")])), Request::Retry(_)));
    }
}

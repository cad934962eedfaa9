//! A probe: a plain process on the node that Erlang drives by message, for
//! diagnostics, tests and benchmarks of links, monitors and exit signals.
//!
//! Messages it obeys: `{echo, To, Msg}` sends `Msg` to `To`; `{link, Pid}`,
//! `{unlink, Pid}`, `{monitor, Pid}`, `{trap_exit, Bool}`; `{exit, Reason}`
//! ends it with `Reason`. Anything else (DOWN and EXIT messages included)
//! is forwarded to its reporter as `{probe, Self, Msg}`.

use crate::etf::{a, as_atom, as_tuple, tuple};
use crate::node::process::Process;
use eetf::{Pid, Term};

pub async fn run(mut me: Process, report_to: Pid) -> Term {
    loop {
        let msg = me.recv().await;
        match as_tuple(&msg) {
            Some([op, Term::Pid(to), payload]) if as_atom(op) == Some("echo") => me.send(to, payload.clone()),
            Some([op, arg]) => match (as_atom(op), arg) {
                (Some("link"), Term::Pid(p)) => me.link(p),
                (Some("unlink"), Term::Pid(p)) => me.unlink(p),
                (Some("monitor"), Term::Pid(p)) => {
                    me.monitor(p);
                }
                (Some("trap_exit"), flag) => me.trap_exit(as_atom(flag) == Some("true")),
                (Some("exit"), reason) => return reason.clone(),
                _ => forward(&me, &report_to, msg.clone()),
            },
            _ => forward(&me, &report_to, msg.clone()),
        }
    }
}

fn forward(me: &Process, report_to: &Pid, msg: Term) {
    me.send(report_to, tuple(vec![a("probe"), Term::from(me.pid().clone()), msg]));
}

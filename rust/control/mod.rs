//! The node's own registered processes: `net_kernel` (so `net_adm:ping`
//! works) and `portnode`, the control server Erlang calls with gen_server.
//!
//! Calls the control server answers: `ping` -> `pong`; `info` -> a map
//! (version, node, connected_nodes, process_count, uptime_ms);
//! `{spawn_probe, ReportTo}` -> the pid of a new [`probe`] process;
//! `cast_count` -> how many casts it has received (for benchmarks);
//! `{open_port, Owner, PortName, Settings}` -> `{ok, Handle}` or `{error, Reason}`
//! (see [`crate::port`]); `{start_supervisor, Parent, SupFlags, ChildSpecs}`
//! -> `{ok, Sup}` or `{error, Reason}` (see [`crate::supervisor`]).

mod probe;

use crate::etf::{a, int, tuple};
use crate::node::process::{error, Process, Received};
use crate::node::Node;
use eetf::{Map, Term};
use std::collections::HashMap;
use std::sync::Arc;
use tracing::warn;

/// Starts and registers the node's own processes.
pub fn start(node: &Arc<Node>) {
    let pid = node.spawn(net_kernel);
    node.register("net_kernel", &pid);
    let pid = node.spawn(control);
    node.register("portnode", &pid);
}

/// Answers `{is_auth, Node}` (what `net_adm:ping` sends) with `yes`.
async fn net_kernel(mut me: Process) -> Term {
    loop {
        match me.recv_classified().await {
            Received::Call(call) => {
                let reply = match crate::etf::as_tuple(&call.request) {
                    Some([tag, _]) if crate::etf::as_atom(tag) == Some("is_auth") => a("yes"),
                    _ => error(a("not_supported")),
                };
                me.reply(&call, reply);
            }
            _ => {}
        }
    }
}

/// The `portnode` control server.
async fn control(mut me: Process) -> Term {
    let mut casts: i64 = 0;
    loop {
        match me.recv_classified().await {
            Received::Call(call) => {
                if let Some([op, Term::Pid(parent), flags, children]) = crate::etf::as_tuple(&call.request) {
                    if crate::etf::as_atom(op) == Some("start_supervisor") {
                        // The supervisor answers the call itself, once its children run.
                        let (parent, flags, children) = (parent.clone(), flags.clone(), children.clone());
                        crate::supervisor::start(&me.node().clone(), &me, call, &parent, &flags, &children);
                        continue;
                    }
                }
                let reply = match crate::etf::as_atom(&call.request) {
                    Some("ping") => a("pong"),
                    Some("info") => info(me.node()),
                    Some("cast_count") => int(casts),
                    _ => match crate::etf::as_tuple(&call.request) {
                        Some([op, Term::Pid(report_to)]) if crate::etf::as_atom(op) == Some("spawn_probe") => {
                            let report_to = report_to.clone();
                            Term::from(me.node().spawn(move |p| probe::run(p, report_to)))
                        }
                        Some([op, Term::Pid(owner), name, settings]) if crate::etf::as_atom(op) == Some("open_port") => {
                            match crate::port::open(me.node(), owner, name, settings) {
                                Ok(opened) => tuple(vec![a("ok"), Term::from(opened.handle)]),
                                Err(reason) => error(reason),
                            }
                        }
                        _ => error(tuple(vec![a("unknown_call"), call.request.clone()])),
                    },
                };
                me.reply(&call, reply);
            }
            Received::Cast(_) => casts += 1,
            Received::Other(msg) => warn!(message = %msg, "control server ignored an unknown message"),
        }
    }
}

fn info(node: &Node) -> Term {
    let connected: Vec<Term> = node.connected_nodes().iter().map(|n| a(n)).collect();
    let entries: HashMap<Term, Term> = [
        (a("version"), Term::from(eetf::Binary::from(env!("CARGO_PKG_VERSION").as_bytes().to_vec()))),
        (a("node"), Term::from(node.name().clone())),
        (a("connected_nodes"), crate::etf::list(connected)),
        (a("process_count"), int(node.process_count() as i64)),
        (a("uptime_ms"), int(node.uptime().as_millis() as i64)),
    ]
    .into_iter()
    .collect();
    Term::from(Map::from(entries))
}

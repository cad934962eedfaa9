//! The node's own registered processes: `net_kernel` (so `net_adm:ping`
//! works) and `portnode`, the control server Erlang calls with gen_server.
//!
//! Calls the control server answers: `ping` -> `pong`; `info` -> a map
//! (version, node, connected_nodes, process_count, uptime_ms, containment:
//! `cgroup` or `process_group`, dist_flags: the distribution flags it offers,
//! peer_dist_flags: those each connected node offered);
//! `{spawn_probe, ReportTo}` -> the pid of a new [`probe`] process;
//! `cast_count` -> how many casts it has received (for benchmarks);
//! `{open_port, Owner, PortName, Settings}` (or with a fifth element, the
//! caller's `[{cwd, Dir}, {env, Changes}]`) -> `{ok, Handle, OsPid | undefined}` or `{error, Reason}`
//! (see [`crate::port`]); `{start_supervisor, Parent, SupFlags, ChildSpecs}`
//! -> `{ok, Sup}` or `{error, Reason}` (see [`crate::supervisor`]).

mod probe;
mod request;

use crate::port::OnStart;
use crate::etf::{a, int, tuple};
use crate::node::process::{error, Process, Received};
use request::{CallRequest, Request};
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
        let (call, request) = match Request::parse(me.recv().await) {
            Request::Call(call, request) => (call, request),
            Request::Cast => {
                casts += 1;
                continue;
            }
            Request::Other(msg) => {
                warn!(message = %crate::etf::brief(&msg, crate::etf::LOGGED_TERM), "control server ignored an unknown message");
                continue;
            }
        };
        let reply = match request {
            CallRequest::Ping => a("pong"),
            CallRequest::Info => info(me.node()),
            CallRequest::CastCount => int(casts),
            CallRequest::SpawnProbe { report_to } => Term::from(me.node().spawn(move |p| probe::run(p, report_to))),
            CallRequest::OpenPort { owner, name, settings, caller, wait } => {
                let settings_ref = settings.clone();
                // The handle answers (at once, or once its program runs):
                // the next open need not wait for this one's exec.
                let on_start = if wait { OnStart::Reply(call) } else { OnStart::ReplyHandle(call) };
                crate::spawner::client::room().await;
                let (node, me_pid) = (me.node().clone(), me.pid().clone());
                let open = move |lookups| {
                    let opened = crate::port::lookups::with(lookups, || crate::port::open(&node, &owner, &name, &settings, caller.as_ref(), on_start));
                    if let Err((reason, OnStart::Reply(call) | OnStart::ReplyHandle(call))) = opened {
                        node.send(Some(&me_pid), &call.from, tuple(vec![call.tag.clone(), error(reason)]));
                    }
                };
                if crate::port::lookups::needed(&settings_ref) {
                    // A user or group to look up (maybe slowly, from a
                    // directory): the next call need not wait for it.
                    let lookups = crate::port::lookups::prepare(&settings_ref);
                    tokio::spawn(async move { open(lookups.await) });
                } else {
                    open(Default::default());
                }
                continue;
            }
            CallRequest::StartSupervisor { parent, flags, children } => {
                // The supervisor answers the call itself, once its children
                // run; as with an open, the next call need not wait for the
                // users and groups its specs name to be looked up.
                let (node, me_pid) = (me.node().clone(), me.pid().clone());
                tokio::spawn(async move {
                    let lookups = crate::port::lookups::prepare_children(&children).await;
                    crate::supervisor::start(&node, &me_pid, call, &parent, &flags, &children, lookups);
                });
                continue;
            }
            CallRequest::Unknown(request) => error(tuple(vec![a("unknown_call"), request])),
        };
        me.reply(&call, reply);
    }
}

fn info(node: &Node) -> Term {
    let connected: Vec<Term> = node.connected_nodes().iter().map(|n| a(n)).collect();
    let peers: HashMap<Term, Term> = node.peer_flags().into_iter().map(|(n, f)| (a(&n), crate::etf::uint(f))).collect();
    let entries: HashMap<Term, Term> = [
        (a("version"), Term::from(eetf::Binary::from(env!("CARGO_PKG_VERSION").as_bytes().to_vec()))),
        (a("node"), Term::from(node.name().clone())),
        (a("connected_nodes"), crate::etf::list(connected)),
        (a("process_count"), int(node.process_count() as i64)),
        (a("uptime_ms"), int(node.uptime().as_millis() as i64)),
        (a("containment"), a(crate::containment::get().name())),
        (a("limits"), Term::from(Map::from(crate::containment::get().limit_places().into_iter().map(|(l, at)| (a(l), a(at))).collect::<HashMap<_, _>>()))),
        (a("dist_flags"), crate::etf::uint(crate::distribution::flags::OFFERED)),
        (a("peer_dist_flags"), Term::from(Map::from(peers))),
    ]
    .into_iter()
    .collect();
    Term::from(Map::from(entries))
}


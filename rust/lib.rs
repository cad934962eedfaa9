//! portnode: a hidden Erlang node that runs external programs on behalf of
//! Erlang processes and makes sure none outlives its owner.
//!
//! [`run`] wires the parts together: epmd registration, the listener and
//! dialers ([`distribution`]), the process table ([`node`]), the node's own
//! registered processes ([`control`]), how programs are contained
//! ([`containment`]) and shutdown ([`shutdown`]). [`notify`] is how
//! programs say they are ready and alive (sd_notify). [`backlog`] is how a
//! connection or a mailbox says it is busy.

pub mod backlog;
pub mod cli;
pub mod containment;
pub mod control;
pub mod cookie;
pub mod distribution;
pub mod etf;
pub mod names;
pub mod node;
pub mod notify;
pub mod port;
pub mod program;
pub mod shutdown;
pub mod spawner;
pub mod supervisor;

use distribution::accept::Pending;
use distribution::connection::{self, Settings};
use distribution::{epmd, handshake};
use erl_dist::node::NodeName;
use node::Node;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// Runs a node until it is told to stop. `env_cookie` is what
/// [`cookie::take_from_env`] took.
pub async fn run(mut cli: cli::Cli, env_cookie: Option<cookie::Secret>) -> anyhow::Result<()> {
    let name = names::node_name(cli.sname.as_deref(), cli.name.as_deref())?;
    let cookie = Arc::new(cookie::load(cli.cookie.take(), cli.cookie_file.as_deref(), env_cookie)?);
    let listener = TcpListener::bind((cli.listen, cli.port)).await?;
    let port = listener.local_addr()?.port();
    let registration = epmd::register(name.name(), port).await?;
    spawner::attach()?;
    let containment = containment::init(&cli.cgroup)?;
    port::watchdog::contain(containment);
    port::watchdog::remove_at_death(notify::runtime_dir::path());
    let node = Node::new(&name.to_string(), registration.creation);
    control::start(&node);
    info!(node = %name, port, creation = registration.creation, listen = %cli.listen, "portnode up");

    let settings = Settings { net_ticktime: Duration::from_secs(cli.net_ticktime), max_frame: cli.max_frame };
    let tracker = TaskTracker::new();
    let link = Link { node: node.clone(), name: name.clone(), cookie, settings, tracker: tracker.clone(), pending: Pending::default() };
    let acceptor = tokio::spawn(accept_loop(listener, link.clone()));
    let dialers: Vec<_> = cli.connect.iter().map(|peer| tokio::spawn(dial_loop(peer.clone(), link.clone()))).collect();

    let why = shutdown::signalled(cli.exit_on_stdin_eof).await;
    info!(why, "shutting down");
    acceptor.abort();
    dialers.iter().for_each(|d| d.abort());
    port::child::end_graces();
    // Before any port closes: no restart grant restarts a program stopped now.
    spawner::client::give_up_all();
    node.terminate_all(etf::a("shutdown"));
    // Let the aborted port processes drop, which starts their programs' reapers.
    tokio::time::sleep(Duration::from_millis(20)).await;
    node.disconnect_all();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(3), tracker.wait()).await.is_err() {
        warn!("connections did not close within 3 s");
    }
    // Every program is stopped within its kill timeout.
    port::child::reapers().close();
    port::child::reapers().wait().await;
    spawner::client::send_reaps();
    containment.close();
    notify::runtime_dir::remove();
    drop(registration);
    Ok(())
}

/// What accepting and dialing need to set up a connection.
#[derive(Clone)]
struct Link {
    node: Arc<Node>,
    name: NodeName,
    cookie: Arc<cookie::Secret>,
    settings: Settings,
    tracker: TaskTracker,
    /// Names with an accepting handshake under way.
    pending: Pending,
}

/// Handshakes under way at once, at most. Each holds a socket for up to the
/// handshake's deadline (7 s): a flood of connections that never speak
/// (half-open, or a port scanner) must not take the descriptors the
/// programs need, nor the memory. Past it, the oldest handshake under way
/// is dropped for the new one: a real peer completes its handshake in
/// milliseconds, so it is the flood's connections that go.
const MAX_HANDSHAKES: usize = 128;

/// The handshakes under way, oldest first, each with what cancels it.
#[derive(Default)]
struct Handshakes {
    next: u64,
    under_way: std::collections::VecDeque<(u64, tokio_util::sync::CancellationToken)>,
}

impl Handshakes {
    /// Registers a new handshake; returns its id, its token, and whether an
    /// older one was dropped to make room.
    fn start(&mut self) -> (u64, tokio_util::sync::CancellationToken, bool) {
        let evicted = self.under_way.len() >= MAX_HANDSHAKES;
        if evicted {
            if let Some((_, oldest)) = self.under_way.pop_front() {
                oldest.cancel();
            }
        }
        self.next += 1;
        let token = tokio_util::sync::CancellationToken::new();
        self.under_way.push_back((self.next, token.clone()));
        (self.next, token, evicted)
    }

    fn finish(&mut self, id: u64) {
        if let Some(i) = self.under_way.iter().position(|(h, _)| *h == id) {
            self.under_way.remove(i);
        }
    }
}

async fn accept_loop(listener: TcpListener, link: Link) {
    let handshakes = Arc::new(std::sync::Mutex::new(Handshakes::default()));
    let mut dropped_since_warning = 0u64;
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (id, cancel, evicted) = handshakes.lock().unwrap_or_else(|e| e.into_inner()).start();
        if evicted {
            dropped_since_warning += 1;
            // One warning a second at most, however many are dropped.
            if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                warn!(peer = %addr, dropped = dropped_since_warning, limit = MAX_HANDSHAKES, "too many handshakes under way: dropping the oldest");
                dropped_since_warning = 0;
                last_warning = Some(tokio::time::Instant::now());
            }
        }
        let link = link.clone();
        let handshakes = handshakes.clone();
        link.tracker.clone().spawn(async move {
            let _ = stream.set_nodelay(true);
            let handshake = {
                let node = &*link.node;
                let accepting = handshake::accept(stream, &link.name, node.creation(), link.cookie.as_str(), node, &link.pending);
                let done = tokio::select! {
                    done = accepting => Some(done),
                    _ = cancel.cancelled() => None,
                };
                handshakes.lock().unwrap_or_else(|e| e.into_inner()).finish(id);
                done
            };
            match handshake {
                None => debug!(peer = %addr, "handshake dropped for a newer connection"),
                Some(Ok((stream, peer))) => connection::serve(stream, peer, link.node.clone(), link.settings).await,
                Some(Err(e)) => warn!(peer = %addr, reason = %e, "rejected a connection"),
            }
        });
    }
}

/// Keeps a connection to `peer` open, redialing with a backoff when it drops.
async fn dial_loop(peer: String, link: Link) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match dial_once(&peer, &link).await {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(e) => {
                warn!(peer = %peer, reason = %e, retry_in = ?backoff, "cannot connect");
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

async fn dial_once(peer: &str, link: &Link) -> anyhow::Result<()> {
    let (alive, host) = peer.split_once('@').ok_or_else(|| anyhow::anyhow!("node name {peer:?} has no @HOST"))?;
    let port = epmd::lookup(alive, host).await?.ok_or_else(|| anyhow::anyhow!("{peer} is not registered with epmd on {host}"))?;
    let (stream, info) = handshake::dial((host.to_owned(), port), &link.name, link.node.creation(), link.cookie.as_str()).await?;
    if info.name != peer {
        anyhow::bail!("dialed {peer} but the node answering is {}", info.name);
    }
    let task = link.tracker.spawn(connection::serve(stream, info, link.node.clone(), link.settings));
    task.await?;
    Ok(())
}

//! Test harness: real portnode and real `erl` nodes behind guards whose
//! `Drop` kills them, so nothing outlives a test, even a failing one.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The cookie every test node shares (kept in a file, never on a command line).
pub const COOKIE: &str = "PORTNODETESTCOOKIE";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or test run) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}x{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The short host name, as `erl -sname` uses it.
pub fn host() -> String {
    let h = portnode::names::hostname().expect("hostname");
    h.split('.').next().unwrap_or(&h).to_owned()
}

/// A private $HOME holding `.erlang.cookie`, removed on drop.
pub struct Home {
    pub path: PathBuf,
}

impl Home {
    pub fn new(cookie: &str) -> Home {
        let path = std::env::temp_dir().join(unique("portnode-test-home-"));
        std::fs::create_dir_all(&path).expect("temp home");
        let file = path.join(".erlang.cookie");
        std::fs::write(&file, cookie).expect("cookie");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        Home { path }
    }
    pub fn cookie_file(&self) -> PathBuf {
        self.path.join(".erlang.cookie")
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Waits until `cond` holds, up to `limit`; panics with `what` otherwise.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running portnode binary.
pub struct Portnode {
    child: Child,
    pub sname: String,
    pub node: String,
    log: PathBuf,
}

impl Portnode {
    /// Starts `portnode --sname NAME` with the home's cookie file, and waits until it is up.
    pub fn start(home: &Home, extra: &[&str]) -> Portnode {
        Self::start_named(home, &unique("pn"), extra)
    }

    pub fn start_named(home: &Home, sname: &str, extra: &[&str]) -> Portnode {
        Self::start_env(home, sname, extra, &[])
    }

    /// As [`Portnode::start_named`], with extra environment variables. With
    /// `PORTNODE_COOKIE` among them, the cookie comes from it (as the
    /// bridge hands it over), not from the home's cookie file.
    pub fn start_env(home: &Home, sname: &str, extra: &[&str], env: &[(&str, &str)]) -> Portnode {
        Self::launch(home, sname, extra, env, |_| {})
    }

    /// As [`Portnode::start`], with `configure` applied to the command first
    /// (a `pre_exec`, say).
    pub fn start_with(home: &Home, extra: &[&str], configure: impl FnOnce(&mut Command)) -> Portnode {
        Self::launch(home, &unique("pn"), extra, &[], configure)
    }

    fn launch(home: &Home, sname: &str, extra: &[&str], env: &[(&str, &str)], configure: impl FnOnce(&mut Command)) -> Portnode {
        let log = home.path.join(format!("{sname}.{}.log", unique("")));
        let mut command = Command::new(env!("CARGO_BIN_EXE_portnode"));
        configure(&mut command);
        command.envs(env.iter().copied()).args(["--sname", sname, "--exit-on-stdin-eof"]);
        if !env.iter().any(|(k, _)| *k == "PORTNODE_COOKIE") {
            command.arg("--cookie-file").arg(home.cookie_file());
        }
        let mut child = command
            .args(extra)
            .env("HOME", &home.path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn portnode");
        let node = format!("{sname}@{}", host());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("portnode up") {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("portnode exited early ({status}): {text}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("portnode did not come up: {text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Portnode { child, sname: sname.to_owned(), node, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the node has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` and waits for the process to end; returns its exit code.
    pub fn signal_and_wait(&mut self, signal: i32) -> Option<i32> {
        // SAFETY: kill(2) on our own, not yet reaped, child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        self.wait_exit()
    }

    /// Waits (up to 10 s) for the process to end; returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "portnode did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Closes the node's stdin.
    pub fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }
}

impl Drop for Portnode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- portnode {} log ---\n{}", self.node, self.log());
        }
    }
}

/// A running `erl` node that evaluates expressions sent on its stdin.
pub struct Erl {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    pub node: String,
}

const REPL: &str = r#"
Loop = fun Loop(Bs) ->
  case io:get_line('') of
    eof -> halt();
    Line ->
      {R, Bs2} = try
          {ok, Ts, _} = erl_scan:string(Line),
          {ok, Es} = erl_parse:parse_exprs(Ts),
          {value, V, B} = erl_eval:exprs(Es, Bs),
          {V, B}
        catch C:E -> {{caught, C, E}, Bs} end,
      io:put_chars([io_lib:print(R, 1, 1000000, -1), "\n==END==\n"]),
      Loop(Bs2)
  end
end,
io:put_chars("==READY==\n"),
Loop(erl_eval:new_bindings())."#;

impl Erl {
    /// Starts `erl -sname NAME` with `home` as $HOME (and so its cookie).
    /// An `erl` of `home` connected to `pn`, with `N` bound to its node name.
    pub fn connected_to(home: &Home, pn: &Portnode) -> Erl {
        let mut erl = Erl::start(home, &[]);
        assert_eq!(erl.eval(&format!("N = '{}', net_adm:ping(N)", pn.node)), "pong");
        erl
    }

    pub fn start(home: &Home, extra: &[&str]) -> Erl {
        Self::start_env(home, &unique("erl"), extra, &[])
    }

    /// As [`Erl::start`], named `sname`, with extra environment variables.
    pub fn start_env(home: &Home, sname: &str, extra: &[&str], env: &[(&str, &str)]) -> Erl {
        let sname = sname.to_owned();
        let mut child = Command::new("erl")
            .envs(env.iter().copied())
            .args(["-noshell", "-sname", &sname])
            .args(extra)
            .args(["-eval", REPL])
            .env("HOME", &home.path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn erl (is Erlang installed?)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut erl = Erl { child, stdin, lines, node: format!("{sname}@{}", host()) };
        erl.read_until("==READY==", Duration::from_secs(30));
        erl
    }

    fn read_until(&mut self, marker: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == marker => return out.join("\n"),
                Ok(line) => out.push(line),
                Err(_) => panic!("erl {} gave no {marker} within {limit:?}; output so far: {out:?}", self.node),
            }
        }
    }

    /// Evaluates Erlang expressions (without the final dot) and returns the printed result.
    pub fn eval(&mut self, exprs: &str) -> String {
        self.eval_within(exprs, Duration::from_secs(30))
    }

    pub fn eval_within(&mut self, exprs: &str, limit: Duration) -> String {
        let line = format!("{}.\n", exprs.replace('\n', " "));
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line.as_bytes()).expect("write to erl");
        stdin.flush().expect("flush erl");
        self.read_until("==END==", limit)
    }

    /// The VM's OS pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the VM (SIGSTOP freezes it; SIGKILL in `Drop` still ends it).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own, not yet reaped, child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Kills the VM with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Erl {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True if epmd lists `sname`.
pub fn epmd_lists(sname: &str) -> bool {
    let out = Command::new("epmd").arg("-names").output().expect("epmd -names");
    String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with(&format!("name {sname} ")))
}

/// A private epmd on a free port, stopped (by its port) on drop. Nodes use it
/// with `ERL_EPMD_PORT`; `-relaxed_command_check` lets a test free a name.
pub struct PrivateEpmd {
    pub port: u16,
}

impl PrivateEpmd {
    pub fn start() -> PrivateEpmd {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let status = Command::new("epmd")
            .args(["-port", &port.to_string(), "-daemon", "-relaxed_command_check"])
            .status()
            .expect("start epmd");
        assert!(status.success(), "epmd -daemon failed");
        let epmd = PrivateEpmd { port };
        wait_for("the private epmd", Duration::from_secs(5), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        epmd
    }

    /// `ERL_EPMD_PORT` for the nodes that use this epmd.
    pub fn env(&self) -> String {
        self.port.to_string()
    }

    /// Frees `sname` (as a frozen node cannot).
    pub fn stop_name(&self, sname: &str) {
        let _ = Command::new("epmd").args(["-port", &self.port.to_string(), "-stop", sname]).output();
    }
}

impl Drop for PrivateEpmd {
    fn drop(&mut self) {
        let _ = Command::new("epmd").args(["-port", &self.port.to_string(), "-kill"]).output();
    }
}

/// True while OS process `pid` exists and is not a zombie.
pub fn os_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()), Some("Z")),
        Err(_) => false,
    }
}

/// Waits up to `limit` for `pid` to be gone; returns how long it took.
pub fn wait_gone(what: &str, pid: u32, limit: Duration) -> Duration {
    let start = Instant::now();
    wait_for(what, limit, || !os_alive(pid));
    start.elapsed()
}

/// The command name of OS process `pid` (empty if it is gone).
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_owned()
}

/// OS pids descended from `ancestor` (children, their children, ...):
/// portnode's programs are children of its spawner, a child of portnode.
pub fn descendants_of(ancestor: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut frontier = vec![ancestor];
    while let Some(parent) = frontier.pop() {
        let kids = children_of(parent);
        frontier.extend(&kids);
        found.extend(kids);
    }
    found
}

/// OS pids, anywhere on the machine, whose command line is exactly `argv`:
/// finds a program's orphans wherever they were reparented (init, a
/// subreaper), which a walk of portnode's descendants would miss.
pub fn processes_running(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain(std::iter::once(0))).collect();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

/// OS pids whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let ppid = stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            kids.push(pid);
        }
    }
    kids
}

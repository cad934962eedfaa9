//! The `open_port/2` arguments: a port name and a settings list, parsed into
//! a [`PortSpec`] with the port BIF's rules, or a badarg naming what is wrong.

use super::lifecycle::Lifecycle;
use super::privileges::Privileges;
use crate::etf::{as_atom, as_int, as_list, as_tuple};
use eetf::{Pid, Term};
use std::ffi::OsString;
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub enum Program {
    /// `{spawn_executable, File}`: run File with `args`.
    Executable(OsString),
    /// `{spawn, CommandLine}`: run by `/bin/sh -c`, as ports do.
    Shell(OsString),
}

/// How the program's output (and our input to it) is cut into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Stream,
    /// `{packet, N}`: N-byte big-endian length before each message.
    Packet(u8),
    /// `{line, L}`: lines, split into `noeol` pieces longer than L.
    Line(usize),
}

pub use crate::program::Stderr;

/// A parsed `open_port` request.
#[derive(Debug, Clone, PartialEq)]
pub struct PortSpec {
    pub program: Program,
    pub args: Vec<OsString>,
    pub arg0: Option<OsString>,
    pub env: Vec<(OsString, Option<OsString>)>,
    pub cd: Option<OsString>,
    pub framing: Framing,
    pub binary: bool,
    pub exit_status: bool,
    /// `exit_signal` (portnode only): a death by signal is reported as
    /// `{exit_signal, Name}` instead of `{exit_status, 128 + N}`.
    pub exit_signal: bool,
    pub use_stdio: bool,
    pub stderr: Stderr,
    /// Output of the program is read (not `out`).
    pub input: bool,
    /// The program's stdin is written (not `in`).
    pub output: bool,
    pub eof: bool,
    pub kill_timeout: Duration,
    /// After a close, how long a program that was sent input may take to
    /// read it and exit on its own before it is stopped.
    pub close_grace: Duration,
    /// The name `port_info(H, name)` reports.
    pub name: String,
    /// `{user, _}`, `{group, _}`, `{nice, _}`, `{rlimit, _}`, `{umask, _}`.
    pub privileges: Privileges,
    /// `{ready, _}`, `{ready_timeout, _}`, `{watchdog, _}`, `{stop_signal, _}`.
    pub lifecycle: Lifecycle,
    /// `{pty, true | {Rows, Cols}}`: a terminal (see [`super::pty`]).
    pub pty: Option<super::pty::Size>,
    /// `{limits, [...]}` (see [`crate::containment::limits`]).
    pub limits: crate::containment::limits::Limits,
    /// `exit_stats`: the owner gets `{H, {exit_stats, Map}}` before the
    /// exit status (see `port::usage`).
    pub exit_stats: bool,
    /// The caller's working directory, when it asked for its own (see
    /// [`PortSpec::apply_caller`]): a relative executable and `cd` are
    /// resolved against it, and the program starts in it if there is no `cd`.
    pub caller_cwd: Option<OsString>,
    /// The caller's relay for this port's output (see `src/portnode_relay.erl`
    /// and [`crate::port::relay`]), if it sent one.
    pub relay: Option<Pid>,
}

/// A bad argument: the offending term, to be named in the error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("bad or unsupported open_port argument: {0}")]
pub struct BadArg(pub Term);

/// Default grace period between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_TIMEOUT: Duration = Duration::from_millis(5000);

/// Default time a closed port's program (one that was sent input) has to
/// take the rest of its input and exit on its own, before SIGTERM.
pub const DEFAULT_CLOSE_GRACE: Duration = Duration::from_millis(5000);

/// The line length of a bare `line` setting (erts's default line buffer).
pub const DEFAULT_LINE: usize = 512;

impl PortSpec {
    /// Parses `PortName` and `Settings` as `erlang:open_port/2` would.
    pub fn parse(port_name: &Term, settings: &Term) -> Result<PortSpec, BadArg> {
        let bad = |t: &Term| BadArg(t.clone());
        let (program, name) = match as_tuple(port_name) {
            Some([kind, file]) if as_atom(kind) == Some("spawn_executable") => {
                let f = string(file).ok_or_else(|| bad(port_name))?;
                let name = String::from_utf8_lossy(f.as_encoded_bytes()).into_owned();
                (Program::Executable(f), name)
            }
            Some([kind, cmd]) if as_atom(kind) == Some("spawn") => {
                let c = string(cmd).ok_or_else(|| bad(port_name))?;
                let name = String::from_utf8_lossy(c.as_encoded_bytes()).into_owned();
                if c.is_empty() {
                    return Err(bad(port_name));
                }
                (Program::Shell(c), name)
            }
            _ => return Err(bad(port_name)),
        };
        let mut spec = PortSpec {
            program,
            args: Vec::new(),
            arg0: None,
            env: Vec::new(),
            cd: None,
            framing: Framing::Stream,
            binary: false,
            exit_status: false,
            exit_signal: false,
            use_stdio: true,
            stderr: Stderr::Log,
            input: true,
            output: true,
            eof: false,
            kill_timeout: DEFAULT_KILL_TIMEOUT,
            close_grace: DEFAULT_CLOSE_GRACE,
            name,
            privileges: Privileges::default(),
            lifecycle: Lifecycle::default(),
            pty: None,
            limits: Default::default(),
            exit_stats: false,
            caller_cwd: None,
            relay: None,
        };
        let (mut only_in, mut only_out) = (false, false);
        for setting in as_list(settings).ok_or_else(|| bad(settings))? {
            match (as_atom(&setting), as_tuple(&setting)) {
                (Some("stream"), _) => spec.framing = Framing::Stream,
                (Some("binary"), _) => spec.binary = true,
                (Some("exit_status"), _) => spec.exit_status = true,
                (Some("exit_signal"), _) => spec.exit_signal = true,
                (Some("exit_stats"), _) => spec.exit_stats = true,
                (Some("use_stdio"), _) => spec.use_stdio = true,
                (Some("nouse_stdio"), _) => spec.use_stdio = false,
                (Some("stderr_to_stdout"), _) => spec.stderr = Stderr::ToStdout,
                (Some("in"), _) => only_in = true,
                (Some("out"), _) => only_out = true,
                (Some("eof"), _) => spec.eof = true,
                (Some("line"), _) => spec.framing = Framing::Line(DEFAULT_LINE),
                // Windows-only and scheduling hints: nothing a program or its owner sees.
                (Some("hide" | "overlapped_io"), _) => {}
                (_, Some([key, value])) => spec.apply_pair(key, value).map_err(|()| bad(&setting))?,
                _ => return Err(bad(&setting)),
            }
        }
        // As erts: `in` and `out` add directions; neither means both.
        spec.input = only_in || !only_out;
        spec.output = only_out || !only_in;
        if !matches!(spec.program, Program::Executable(_)) && (!spec.args.is_empty() || spec.arg0.is_some()) {
            // Like erlang:open_port: args and arg0 only go with spawn_executable.
            return Err(bad(settings));
        }
        if spec.stderr != Stderr::Log && !spec.use_stdio {
            return Err(bad(settings));
        }
        if spec.pty.is_some() {
            // A terminal is both ways, on stdio.
            if !spec.use_stdio || only_in || only_out {
                let pty = as_list(settings).into_iter().flatten().filter(|s| as_tuple(s).is_some_and(|t| t.len() == 2 && as_atom(&t[0]) == Some("pty"))).last();
                return Err(bad(&pty.unwrap_or_else(|| settings.clone())));
            }
            // No terminal type the program could act on unless the `env`
            // setting (after this) names one: no colours, no escapes.
            spec.env.insert(0, ("TERM".into(), Some("dumb".into())));
        }
        if spec.privileges.check().is_err() {
            // A uid with no passwd entry and no `{group, _}`: name the user setting.
            let user = as_list(settings).into_iter().flatten().filter(|s| as_tuple(s).is_some_and(|t| t.len() == 2 && as_atom(&t[0]) == Some("user"))).last();
            return Err(bad(&user.unwrap_or_else(|| settings.clone())));
        }
        Ok(spec)
    }

    fn apply_pair(&mut self, key: &Term, value: &Term) -> Result<(), ()> {
        let key = as_atom(key).ok_or(())?;
        if let Some(parsed) = self.privileges.parse(key, value).or_else(|| self.lifecycle.parse(key, value)) {
            return parsed;
        }
        match key {
            "packet" => {
                self.framing = match as_int(value) {
                    Some(n @ (1 | 2 | 4)) => Framing::Packet(n as u8),
                    _ => return Err(()),
                }
            }
            "line" => match as_int(value) {
                Some(l) if l > 0 => self.framing = Framing::Line(l as usize),
                _ => return Err(()),
            },
            "args" => {
                let items = as_list(value).ok_or(())?;
                self.args = items.iter().map(string).collect::<Option<_>>().ok_or(())?;
            }
            "arg0" => self.arg0 = Some(string(value).ok_or(())?),
            "cd" => self.cd = Some(string(value).ok_or(())?),
            "env" => self.env.extend(env_list(value)?),
            "parallelism" if matches!(as_atom(value), Some("true" | "false")) => {}
            "stderr" if as_atom(value) == Some("message") => {
                self.stderr = Stderr::Message;
            }
            "kill_timeout" => match as_int(value) {
                Some(ms) if ms >= 0 => self.kill_timeout = Duration::from_millis(ms as u64),
                _ => return Err(()),
            },
            "pty" => self.pty = super::pty::parse(value)?,
            "limits" => self.limits = crate::containment::limits::Limits::parse(value)?,
            "close_grace" => match as_int(value) {
                Some(ms) if ms >= 0 => self.close_grace = Duration::from_millis(ms as u64),
                _ => return Err(()),
            },
            _ => return Err(()),
        }
        Ok(())
    }

    /// What `portnode:open_port` sends about the caller's VM when portnode
    /// is its own bridge-launched one: `[{cwd_of, VmOsPid}, {env, Changes}]`
    /// (or `{cwd, Dir}`), the VM whose working directory the program starts
    /// in, and how its environment differs from the one
    /// portnode started with. The changes go first, so the `env` setting
    /// still has the last word.
    pub fn apply_caller(&mut self, caller: &Term) -> Result<(), BadArg> {
        let bad = || BadArg(caller.clone());
        for item in as_list(caller).ok_or_else(bad)? {
            match as_tuple(&item) {
                Some([k, dir]) if as_atom(k) == Some("cwd") => self.caller_cwd = Some(string(dir).ok_or_else(bad)?),
                Some([k, pid]) if as_atom(k) == Some("cwd_of") => {
                    let pid = as_int(pid).filter(|&p| p > 0 && p <= i64::from(i32::MAX)).ok_or_else(bad)?;
                    self.caller_cwd = Some(cwd_of(pid));
                }
                Some([k, Term::Pid(relay)]) if as_atom(k) == Some("relay") => self.relay = Some(relay.clone()),
                Some([k, env]) if as_atom(k) == Some("env") => {
                    let mut changes = env_list(env).map_err(|()| bad())?;
                    changes.append(&mut self.env);
                    self.env = changes;
                }
                _ => return Err(bad()),
            }
        }
        Ok(())
    }
}

/// The working directory of process `pid` (the caller's VM, on this host),
/// read as erts reads its own with getcwd(3) for each spawn. If it cannot
/// be read (the VM is gone), the program gets a directory that does not
/// exist, so it fails as a program in a deleted directory would.
fn cwd_of(pid: i64) -> OsString {
    match std::fs::read_link(format!("/proc/{pid}/cwd")) {
        Ok(dir) => dir.into_os_string(),
        Err(e) => {
            tracing::warn!(pid, error = %e, "cannot read the caller VM's working directory");
            OsString::from(format!("/proc/{pid}/cwd"))
        }
    }
}

/// `[{Name, Value | false}]`: names non-empty and without `=`; as erts,
/// names and values are strings (lists), not binaries.
fn env_list(value: &Term) -> Result<Vec<(OsString, Option<OsString>)>, ()> {
    let list_string = |t: &Term| if matches!(t, Term::Binary(_)) { None } else { string(t) };
    let mut env = Vec::new();
    for pair in as_list(value).ok_or(())? {
        match as_tuple(&pair) {
            Some([k, v]) => {
                let k = list_string(k).filter(|k| !k.is_empty() && !k.as_encoded_bytes().contains(&b'=')).ok_or(())?;
                let v = if as_atom(v) == Some("false") { None } else { Some(list_string(v).ok_or(())?) };
                env.push((k, v));
            }
            _ => return Err(()),
        }
    }
    Ok(env)
}

pub use crate::etf::os_string as string;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etf::{a, binary, int, list, tuple};

    fn s(text: &str) -> Term {
        Term::from(eetf::ByteList::from(text))
    }

    #[test]
    fn parses_the_usual_settings() {
        let name = tuple(vec![a("spawn_executable"), s("/bin/cat")]);
        let settings = list(vec![
            tuple(vec![a("packet"), int(2)]),
            a("binary"),
            a("exit_status"),
            tuple(vec![a("args"), list(vec![s("a b"), binary("é".as_bytes().to_vec())])]),
            tuple(vec![a("env"), list(vec![tuple(vec![s("X"), s("1")]), tuple(vec![s("Y"), a("false")])])]),
            tuple(vec![a("kill_timeout"), int(100)]),
            tuple(vec![a("stderr"), a("message")]),
        ]);
        let spec = PortSpec::parse(&name, &settings).expect("parses");
        assert_eq!(spec.framing, Framing::Packet(2));
        assert!(spec.binary && spec.exit_status && spec.input && spec.output);
        assert_eq!(spec.args, vec![OsString::from("a b"), OsString::from("é")]);
        assert_eq!(spec.env, vec![(OsString::from("X"), Some(OsString::from("1"))), (OsString::from("Y"), None)]);
        assert_eq!(spec.kill_timeout, Duration::from_millis(100));
        assert_eq!(spec.stderr, Stderr::Message);
    }

    #[test]
    fn names_what_it_rejects() {
        let name = tuple(vec![a("spawn"), s("cat")]);
        let unknown = tuple(vec![a("busy_limits_msgq"), a("disabled")]);
        assert_eq!(PortSpec::parse(&name, &list(vec![unknown.clone()])), Err(BadArg(unknown)));
        let packet3 = tuple(vec![a("packet"), int(3)]);
        assert_eq!(PortSpec::parse(&name, &list(vec![packet3.clone()])), Err(BadArg(packet3)));
        assert!(PortSpec::parse(&tuple(vec![a("fd"), int(0), int(1)]), &list(vec![])).is_err());
        // args only with spawn_executable
        let args = list(vec![tuple(vec![a("args"), list(vec![s("x")])])]);
        assert_eq!(PortSpec::parse(&name, &args), Err(BadArg(args.clone())));
        assert!(PortSpec::parse(&tuple(vec![a("spawn_executable"), s("/bin/echo")]), &args).is_ok());
    }

    #[test]
    fn bare_line_and_harmless_hints() {
        let name = tuple(vec![a("spawn"), s("cat")]);
        let spec = PortSpec::parse(&name, &list(vec![a("line"), a("overlapped_io"), tuple(vec![a("parallelism"), a("true")])])).unwrap();
        assert_eq!(spec.framing, Framing::Line(DEFAULT_LINE));
        let busy = tuple(vec![a("busy_limits_port"), a("disabled")]);
        assert_eq!(PortSpec::parse(&name, &list(vec![busy.clone()])), Err(BadArg(busy)));
        assert!(PortSpec::parse(&name, &list(vec![tuple(vec![a("parallelism"), int(1)])])).is_err());
    }

    #[test]
    fn the_callers_environment_comes_before_the_env_setting() {
        let name = tuple(vec![a("spawn"), s("cat")]);
        let mut spec = PortSpec::parse(&name, &list(vec![tuple(vec![a("env"), list(vec![tuple(vec![s("A"), s("mine")])])])])).unwrap();
        let caller = list(vec![
            tuple(vec![a("cwd"), s("/tmp")]),
            tuple(vec![a("env"), list(vec![tuple(vec![s("A"), s("vm")]), tuple(vec![s("B"), a("false")])])]),
        ]);
        spec.apply_caller(&caller).unwrap();
        assert_eq!(spec.caller_cwd, Some(OsString::from("/tmp")));
        let a_values: Vec<_> = spec.env.iter().filter(|(k, _)| k == "A").map(|(_, v)| v.clone()).collect();
        assert_eq!(a_values, vec![Some(OsString::from("vm")), Some(OsString::from("mine"))]);
        assert!(spec.apply_caller(&list(vec![tuple(vec![a("other"), a("x")])])).is_err());
    }

    #[test]
    fn the_callers_directory_is_read_from_its_pid() {
        let name = tuple(vec![a("spawn"), s("cat")]);
        let mut spec = PortSpec::parse(&name, &list(vec![])).unwrap();
        spec.apply_caller(&list(vec![tuple(vec![a("cwd_of"), int(i64::from(std::process::id()))])])).unwrap();
        assert_eq!(spec.caller_cwd, Some(std::env::current_dir().unwrap().into_os_string()));
        for bad in [int(0), int(-1), s("1")] {
            assert!(spec.apply_caller(&list(vec![tuple(vec![a("cwd_of"), bad])])).is_err());
        }
    }

    #[test]
    fn latin1_byte_strings_become_utf8() {
        let t = Term::from(eetf::ByteList::from(vec![104u8, 233]));
        assert_eq!(string(&t).unwrap(), OsString::from("hé"));
    }
}

//! Supervisor flags and child specs as Erlang writes them (maps, or the old
//! tuples for flags), checked the way `supervisor` checks them: a bad one is
//! an error term naming what is wrong, in OTP's words.

use crate::etf::{a, as_atom, as_int, as_list, as_tuple, int, tuple};
use crate::port::settings::{PortSpec, Stderr};
use eetf::{Map, Term};
use std::collections::HashMap;
use std::time::Duration;

/// What a supervisor restarts when a child exits and is to be restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    OneForOne,
    OneForAll,
    RestForOne,
}

/// Supervisor flags: strategy, and at most `intensity` restarts in `period`.
#[derive(Debug, Clone, PartialEq)]
pub struct Flags {
    pub strategy: Strategy,
    pub intensity: u32,
    pub period: Duration,
}

/// When a child that exited is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    Permanent,
    Transient,
    Temporary,
}

/// One program under a supervisor.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildSpec {
    pub id: Term,
    /// `open_port` arguments, checked when the spec is.
    pub port_name: Term,
    pub settings: Term,
    /// `settings` and what the supervisor adds to them: the exit status
    /// (signals apart), and stderr as messages it can log when the program
    /// writes it to the port's stdio. Built once, not at every restart.
    pub open_settings: Term,
    pub restart: Restart,
    /// Grace between SIGTERM and SIGKILL: zero for `brutal_kill`, none for `infinity`.
    pub shutdown: Option<Duration>,
    pub modules: Term,
    /// It has a `{ready, _}` setting: it has started once it says it is ready.
    pub waits_ready: bool,
}

const DEFAULT_SHUTDOWN: Duration = Duration::from_millis(5000);

fn map_get<'a>(map: &'a Map, key: &str) -> Option<&'a Term> {
    map.map.get(&a(key))
}

impl Flags {
    /// `#{strategy, intensity, period}` (defaults one_for_one, 1, 5) or
    /// `{Strategy, Intensity, Period}`; errors are `supervisor_data` reasons.
    pub fn parse(term: &Term) -> Result<Flags, Term> {
        let (strategy, intensity, period) = match (term, as_tuple(term)) {
            (Term::Map(m), _) => {
                if let Some(key) = m.map.keys().find(|k| !matches!(as_atom(k), Some("strategy" | "intensity" | "period" | "auto_shutdown"))) {
                    return Err(tuple(vec![a("invalid_sup_flags_key"), key.clone()]));
                }
                (map_get(m, "strategy").cloned().unwrap_or(a("one_for_one")), map_get(m, "intensity").cloned().unwrap_or(int(1)), map_get(m, "period").cloned().unwrap_or(int(5)))
            }
            (_, Some([s, i, p])) => (s.clone(), i.clone(), p.clone()),
            _ => return Err(tuple(vec![a("invalid_type"), term.clone()])),
        };
        let strategy = match as_atom(&strategy) {
            Some("one_for_one") => Strategy::OneForOne,
            Some("one_for_all") => Strategy::OneForAll,
            Some("rest_for_one") => Strategy::RestForOne,
            _ => return Err(tuple(vec![a("invalid_strategy"), strategy])),
        };
        let intensity = as_int(&intensity).and_then(|i| u32::try_from(i).ok()).ok_or_else(|| tuple(vec![a("invalid_intensity"), intensity.clone()]))?;
        let period = as_int(&period).filter(|&p| p > 0).ok_or_else(|| tuple(vec![a("invalid_period"), period.clone()]))?;
        Ok(Flags { strategy, intensity, period: Duration::from_secs(period as u64) })
    }
}

impl ChildSpec {
    /// `#{id := Id, start := {PortName, Settings}, restart => R, shutdown => S,
    /// type => worker, modules => M}`; errors are `start_spec` reasons.
    pub fn parse(term: &Term) -> Result<ChildSpec, Term> {
        let invalid = |what: &str, t: &Term| tuple(vec![a(what), t.clone()]);
        let Term::Map(m) = term else { return Err(invalid("invalid_child_spec", term)) };
        if let Some(key) = m.map.keys().find(|k| !matches!(as_atom(k), Some("id" | "start" | "restart" | "shutdown" | "type" | "modules"))) {
            return Err(invalid("invalid_child_spec_key", key));
        }
        let id = map_get(m, "id").ok_or_else(|| a("missing_id"))?.clone();
        let start = map_get(m, "start").ok_or_else(|| a("missing_start"))?;
        let Some([port_name, settings]) = as_tuple(start) else { return Err(invalid("invalid_start", start)) };
        let parsed = match PortSpec::parse(port_name, settings) {
            Ok(parsed) => parsed,
            Err(bad) => return Err(tuple(vec![a("invalid_start"), tuple(vec![a("badarg"), bad.0])])),
        };
        let mut open_settings = as_list(settings).unwrap_or_default();
        open_settings.extend([a("exit_status"), a("exit_signal")]);
        if parsed.use_stdio && parsed.stderr == Stderr::Log {
            open_settings.push(tuple(vec![a("stderr"), a("message")]));
        }
        let restart = match map_get(m, "restart") {
            None => Restart::Permanent,
            Some(r) => match as_atom(r) {
                Some("permanent") => Restart::Permanent,
                Some("transient") => Restart::Transient,
                Some("temporary") => Restart::Temporary,
                _ => return Err(invalid("invalid_restart_type", r)),
            },
        };
        let shutdown = match map_get(m, "shutdown") {
            None => Some(DEFAULT_SHUTDOWN),
            Some(s) => crate::port::grace_period(s).ok_or_else(|| invalid("invalid_shutdown", s))?,
        };
        if let Some(t) = map_get(m, "type").filter(|t| as_atom(t) != Some("worker")) {
            // Children are programs; a supervisor in portnode does not nest supervisors.
            return Err(invalid("invalid_child_type", t));
        }
        let modules = map_get(m, "modules").cloned().unwrap_or_else(|| crate::etf::list(vec![]));
        if as_list(&modules).is_none() && as_atom(&modules) != Some("dynamic") {
            return Err(invalid("invalid_modules", &modules));
        }
        Ok(ChildSpec { id, port_name: port_name.clone(), settings: settings.clone(), open_settings: crate::etf::list(open_settings), restart, shutdown, modules, waits_ready: parsed.lifecycle.ready.is_some() })
    }

    /// All of `list`, with ids unique.
    pub fn parse_all(list: &Term) -> Result<Vec<ChildSpec>, Term> {
        let items = as_list(list).ok_or_else(|| tuple(vec![a("invalid_child_specs"), list.clone()]))?;
        let mut specs: Vec<ChildSpec> = Vec::with_capacity(items.len());
        for item in &items {
            let spec = ChildSpec::parse(item)?;
            if specs.iter().any(|s| s.id == spec.id) {
                return Err(tuple(vec![a("duplicate_child_name"), spec.id]));
            }
            specs.push(spec);
        }
        Ok(specs)
    }

    /// The spec as `supervisor:get_childspec/2` returns it.
    pub fn to_term(&self) -> Term {
        let restart = match self.restart {
            Restart::Permanent => "permanent",
            Restart::Transient => "transient",
            Restart::Temporary => "temporary",
        };
        let shutdown = match self.shutdown {
            Some(d) if d.is_zero() => a("brutal_kill"),
            Some(d) => int(d.as_millis() as i64),
            None => a("infinity"),
        };
        let entries: HashMap<Term, Term> = [
            (a("id"), self.id.clone()),
            (a("start"), tuple(vec![self.port_name.clone(), self.settings.clone()])),
            (a("restart"), a(restart)),
            (a("shutdown"), shutdown),
            (a("type"), a("worker")),
            (a("modules"), self.modules.clone()),
        ]
        .into_iter()
        .collect();
        Term::from(Map::from(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etf::list;

    fn map(pairs: Vec<(&str, Term)>) -> Term {
        Term::from(Map::from(pairs.into_iter().map(|(k, v)| (a(k), v)).collect::<HashMap<Term, Term>>()))
    }

    fn start() -> Term {
        tuple(vec![tuple(vec![a("spawn"), Term::from(eetf::ByteList::from("cat"))]), list(vec![])])
    }

    #[test]
    fn flags_default_as_otp_does() {
        let flags = Flags::parse(&map(vec![])).expect("empty map");
        assert_eq!(flags, Flags { strategy: Strategy::OneForOne, intensity: 1, period: Duration::from_secs(5) });
        let flags = Flags::parse(&tuple(vec![a("rest_for_one"), int(3), int(10)])).expect("tuple");
        assert_eq!(flags.strategy, Strategy::RestForOne);
        assert_eq!(Flags::parse(&map(vec![("strategy", a("simple_one_for_one"))])), Err(tuple(vec![a("invalid_strategy"), a("simple_one_for_one")])));
        assert_eq!(Flags::parse(&map(vec![("period", int(0))])), Err(tuple(vec![a("invalid_period"), int(0)])));
    }

    #[test]
    fn child_specs_are_checked() {
        let spec = ChildSpec::parse(&map(vec![("id", a("x")), ("start", start()), ("shutdown", a("brutal_kill"))])).expect("valid");
        assert_eq!((spec.restart, spec.shutdown), (Restart::Permanent, Some(Duration::ZERO)));
        assert_eq!(ChildSpec::parse(&spec.to_term()), Ok(spec.clone()));
        let bad = map(vec![("id", a("x")), ("start", start()), ("restart", a("sometimes"))]);
        assert_eq!(ChildSpec::parse(&bad), Err(tuple(vec![a("invalid_restart_type"), a("sometimes")])));
        let bad_setting = tuple(vec![tuple(vec![a("spawn"), Term::from(eetf::ByteList::from("cat"))]), list(vec![a("nonsense")])]);
        let bad = map(vec![("id", a("x")), ("start", bad_setting)]);
        assert_eq!(ChildSpec::parse(&bad), Err(tuple(vec![a("invalid_start"), tuple(vec![a("badarg"), a("nonsense")])])));
        let one = map(vec![("id", a("x")), ("start", start())]);
        assert_eq!(ChildSpec::parse_all(&list(vec![one.clone(), one])), Err(tuple(vec![a("duplicate_child_name"), a("x")])));
    }

    #[test]
    fn a_child_opens_with_its_exit_status_and_its_stderr_as_messages() {
        let with = |settings: Vec<Term>| {
            let start = tuple(vec![tuple(vec![a("spawn"), Term::from(eetf::ByteList::from("cat"))]), list(settings)]);
            ChildSpec::parse(&map(vec![("id", a("x")), ("start", start)])).expect("valid").open_settings
        };
        let stderr_message = tuple(vec![a("stderr"), a("message")]);
        assert_eq!(with(vec![a("binary")]), list(vec![a("binary"), a("exit_status"), a("exit_signal"), stderr_message]));
        assert_eq!(with(vec![a("stderr_to_stdout")]), list(vec![a("stderr_to_stdout"), a("exit_status"), a("exit_signal")]));
        assert_eq!(with(vec![a("nouse_stdio")]), list(vec![a("nouse_stdio"), a("exit_status"), a("exit_signal")]));
    }
}

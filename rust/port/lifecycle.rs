//! The settings that make a program a service, as systemd runs one: how it
//! says it is ready (`{ready, notify}`, `{ready, {line, Prefix}}`), how long
//! it has to say so (`{ready_timeout, Ms}`), how often it must say it is
//! alive (`{watchdog, Ms}`), and the first signal of every stop
//! (`{stop_signal, Sig}`). Parsed here; acted on by the port (see
//! [`super::health`]) and by [`super::child::Running`].

use super::child::signal_number;
use crate::etf::{as_atom, as_int, as_tuple};
use eetf::Term;
use std::time::Duration;

/// How a program says it is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// `READY=1` on `$NOTIFY_SOCKET` (sd_notify).
    Notify,
    /// A line of output that starts with these bytes.
    Line(Vec<u8>),
}

/// The lifecycle settings of one program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    pub ready: Option<Ready>,
    /// How long the program has to become ready (`None`: forever).
    pub ready_timeout: Option<Duration>,
    /// The longest it may go without `WATCHDOG=1` once ready (or started,
    /// without a `ready` setting).
    pub watchdog: Option<Duration>,
    /// The first signal of every stop; SIGKILL follows after the grace.
    pub stop_signal: i32,
}

/// Thirty seconds: longer than any sane program takes to start, short
/// enough that a start that hangs is noticed (systemd's default is 90 s,
/// for whole machines booting).
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for Lifecycle {
    fn default() -> Lifecycle {
        Lifecycle { ready: None, ready_timeout: Some(DEFAULT_READY_TIMEOUT), watchdog: None, stop_signal: libc::SIGTERM }
    }
}

impl Lifecycle {
    /// Parses one setting `{Key, Value}` if it is one of these: `None` if
    /// the key is not ours, `Some(Err(()))` if the value is bad.
    pub fn parse(&mut self, key: &str, value: &Term) -> Option<Result<(), ()>> {
        let done = match key {
            "ready" => ready(value).map(|r| self.ready = Some(r)),
            "ready_timeout" => match (as_int(value), as_atom(value)) {
                (Some(ms), _) if ms > 0 => Ok(self.ready_timeout = Some(Duration::from_millis(ms as u64))),
                (_, Some("infinity")) => Ok(self.ready_timeout = None),
                _ => Err(()),
            },
            "watchdog" => match as_int(value) {
                Some(ms) if ms > 0 => Ok(self.watchdog = Some(Duration::from_millis(ms as u64))),
                _ => Err(()),
            },
            "stop_signal" => signal(value).map(|s| self.stop_signal = s),
            _ => return None,
        };
        Some(done)
    }

    /// The program needs a notify socket: it is to say `READY=1` or `WATCHDOG=1`.
    pub fn needs_socket(&self) -> bool {
        self.ready == Some(Ready::Notify) || self.watchdog.is_some()
    }
}

fn ready(value: &Term) -> Result<Ready, ()> {
    if as_atom(value) == Some("notify") {
        return Ok(Ready::Notify);
    }
    match as_tuple(value) {
        Some([tag, prefix]) if as_atom(tag) == Some("line") => {
            let prefix = crate::etf::os_string(prefix).ok_or(())?.into_encoded_bytes();
            // An empty prefix would be any line: say so with a line of your own.
            if prefix.is_empty() || prefix.contains(&b'\n') {
                return Err(());
            }
            Ok(Ready::Line(prefix))
        }
        _ => Err(()),
    }
}

/// A signal by number (1 to 64, not 0) or by name (`term`, `sighup`, `'INT'`).
fn signal(value: &Term) -> Result<i32, ()> {
    match (as_int(value), as_atom(value)) {
        (Some(n), _) if (1..=64).contains(&n) => Ok(n as i32),
        (_, Some(name)) => signal_number(name).ok_or(()),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etf::{a, binary, int, tuple};

    #[test]
    fn parses_each_setting() {
        let mut l = Lifecycle::default();
        assert_eq!(l.parse("ready", &a("notify")), Some(Ok(())));
        assert_eq!(l.ready, Some(Ready::Notify));
        assert_eq!(l.parse("ready", &tuple(vec![a("line"), binary(b"listening".to_vec())])), Some(Ok(())));
        assert_eq!(l.ready, Some(Ready::Line(b"listening".to_vec())));
        assert_eq!(l.parse("ready_timeout", &int(500)), Some(Ok(())));
        assert_eq!(l.ready_timeout, Some(Duration::from_millis(500)));
        assert_eq!(l.parse("ready_timeout", &a("infinity")), Some(Ok(())));
        assert_eq!(l.ready_timeout, None);
        assert_eq!(l.parse("watchdog", &int(2000)), Some(Ok(())));
        assert_eq!(l.watchdog, Some(Duration::from_secs(2)));
        for (sig, n) in [(a("hup"), libc::SIGHUP), (a("SIGINT"), libc::SIGINT), (int(10), 10)] {
            assert_eq!(l.parse("stop_signal", &sig), Some(Ok(())));
            assert_eq!(l.stop_signal, n);
        }
        assert_eq!(l.parse("packet", &int(4)), None);
    }

    #[test]
    fn rejects_what_cannot_be() {
        let mut l = Lifecycle::default();
        for (key, value) in [
            ("ready", a("systemd")),
            ("ready", tuple(vec![a("line"), binary(Vec::new())])),
            ("ready", tuple(vec![a("line"), a("x")])),
            ("ready_timeout", int(0)),
            ("watchdog", int(-5)),
            ("watchdog", a("infinity")),
            ("stop_signal", int(0)),
            ("stop_signal", int(65)),
            ("stop_signal", a("nosuch")),
        ] {
            assert_eq!(l.parse(key, &value), Some(Err(())), "{key} {value}");
        }
        assert_eq!(l, Lifecycle::default());
        assert!(!l.needs_socket());
        assert_eq!((l.ready_timeout, l.stop_signal), (Some(Duration::from_secs(30)), libc::SIGTERM));
    }
}

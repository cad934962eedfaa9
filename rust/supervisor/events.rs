//! What a child's port sends its supervisor (its owner): the program's
//! output and stderr, logged; what it says of itself (ready, status,
//! stopping); and how it ended (its exit status, or which step of a stop
//! ended it), kept for the child's exit report.

use super::Supervisor;
use crate::etf::{self, as_atom, as_tuple};
use eetf::Term;
use tracing::{info, warn};

impl Supervisor {
    /// What a child's port sends its owner: output to log, what the
    /// program says of itself, and how it ended.
    pub(super) fn child_event(&mut self, i: usize, event: &Term) {
        let child = &mut self.children[i];
        let (id, os_pid) = (&child.spec.id, child.os_pid.unwrap_or(0));
        match log_event(self.me.pid(), id, os_pid, event) {
            Some(Said::Ended) => child.ended = Some(event.clone()),
            Some(Said::Stopped(step)) => child.stopped = Some(step),
            None => {}
        }
    }

    /// What the handle of a program its restart grant replaced sends as it
    /// goes: logged, and its exit status kept for the log line of its exit.
    pub(super) fn retired_event(&mut self, from: &eetf::Pid, event: &Term) {
        let Some(retired) = self.retired.iter_mut().find(|r| r.handle == *from) else { return };
        if let Some(Said::Ended) = log_event(self.me.pid(), &retired.id, retired.os_pid, event) {
            retired.ended = Some(event.clone());
        }
    }
}

/// What a port's event says of how its program ended.
enum Said {
    /// `{exit_status, N}` or `{exit_signal, S}`: the event itself.
    Ended,
    /// `{stopped, Step}`: which step of a stop ended it.
    Stopped(Term),
}

/// Logs what a child's port sent (output, stderr, what the program says of
/// itself); returns what it says of how the program ended, if anything.
fn log_event(supervisor: &eetf::Pid, id: &Term, os_pid: u32, event: &Term) -> Option<Said> {
    {
        match (as_atom(event), as_tuple(event)) {
            (_, Some([tag, data])) if as_atom(tag) == Some("data") => {
                let line = match as_tuple(data) {
                    Some([_eol, line]) => text(line),
                    _ => text(data),
                };
                info!(supervisor = %supervisor, child = %id, os_pid, output = %line.trim_end(), "child output");
            }
            (_, Some([tag, data])) if as_atom(tag) == Some("stderr") => {
                warn!(supervisor = %supervisor, child = %id, os_pid, stderr = %text(data).trim_end(), "child stderr");
            }
            (_, Some([tag, _])) if matches!(as_atom(tag), Some("exit_status" | "exit_signal")) => return Some(Said::Ended),
            (_, Some([tag, step])) if as_atom(tag) == Some("stopped") => return Some(Said::Stopped(step.clone())),
            (_, Some([tag, text_])) if as_atom(tag) == Some("status") => {
                info!(supervisor = %supervisor, child = %id, os_pid, status = %text(text_), "child status");
            }
            (Some(said @ ("ready" | "stopping")), _) => info!(supervisor = %supervisor, child = %id, os_pid, "child {said}"),
            (_, Some([tag, value])) if matches!(as_atom(tag), Some("errno" | "mainpid")) => {
                info!(supervisor = %supervisor, child = %id, os_pid, said = %event, value = %value, "child notice");
            }
            _ => {}
        }
    }
    None
}

/// Program output as text for a log line.
fn text(data: &Term) -> String {
    let mut bytes = Vec::new();
    match etf::iodata(data, &mut bytes) {
        Some(()) => String::from_utf8_lossy(&bytes).into_owned(),
        None => data.to_string(),
    }
}

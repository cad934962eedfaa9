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
        match (as_atom(event), as_tuple(event)) {
            (_, Some([tag, data])) if as_atom(tag) == Some("data") => {
                let line = match as_tuple(data) {
                    Some([_eol, line]) => text(line),
                    _ => text(data),
                };
                info!(supervisor = %self.me.pid(), child = %id, os_pid, output = %line.trim_end(), "child output");
            }
            (_, Some([tag, data])) if as_atom(tag) == Some("stderr") => {
                warn!(supervisor = %self.me.pid(), child = %id, os_pid, stderr = %text(data).trim_end(), "child stderr");
            }
            (_, Some([tag, _])) if matches!(as_atom(tag), Some("exit_status" | "exit_signal")) => child.ended = Some(event.clone()),
            (_, Some([tag, step])) if as_atom(tag) == Some("stopped") => child.stopped = Some(step.clone()),
            (_, Some([tag, text_])) if as_atom(tag) == Some("status") => {
                info!(supervisor = %self.me.pid(), child = %id, os_pid, status = %text(text_), "child status");
            }
            (Some(said @ ("ready" | "stopping")), _) => info!(supervisor = %self.me.pid(), child = %id, os_pid, "child {said}"),
            (_, Some([tag, value])) if matches!(as_atom(tag), Some("errno" | "mainpid")) => {
                info!(supervisor = %self.me.pid(), child = %id, os_pid, said = %event, value = %value, "child notice");
            }
            _ => {}
        }
    }
}

/// Program output as text for a log line.
fn text(data: &Term) -> String {
    let mut bytes = Vec::new();
    match etf::iodata(data, &mut bytes) {
        Some(()) => String::from_utf8_lossy(&bytes).into_owned(),
        None => data.to_string(),
    }
}

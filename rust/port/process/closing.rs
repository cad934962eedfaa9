//! A port's end: what its program was sent is written, its terminal hung
//! up, its stderr logged to the last line, and it is given its
//! `close_grace`, then stopped.

use super::*;

impl Port {
    /// The port has closed: its owner closed it or exited, its output
    /// ended, or it was stopped. As erts flushes a closing port's queue and
    /// closes the program's stdin, a program that was sent input gets all
    /// of it, then EOF, and has `close_grace` to exit on its own (a filter
    /// that writes its result at EOF: `gzip -c > f`); only then is what is
    /// left of it stopped (its stop signal, SIGKILL after `kill_timeout`). A
    /// program that was sent nothing (a server, a daemon: it would not
    /// finish on EOF) is stopped at once, as is one stopped by
    /// `portnode:stop`. Nothing of it outlives the handle by more than
    /// `close_grace` + `kill_timeout`.
    ///
    /// The program's stderr, when portnode logs it, is read on meanwhile:
    /// a program that says goodbye on stderr as it is stopped must not die
    /// of SIGPIPE halfway through its cleanup. The log ends at its EOF, or
    /// shortly after the program is gone.
    ///
    /// A terminal is hung up first: the master's last fd is the input's,
    /// closed once that is written (the kernel sends the session leader
    /// SIGHUP), before any stop's SIGTERM.
    pub(super) fn closed(self: Box<Self>, stderr: Option<(pipe::Receiver, Vec<u8>)>) {
        let Port { mut program, stdin, settings, bytes_out, os_pid, pty, .. } = *self;
        drop(pty);
        let grace = settings.close_grace;
        let linger = !grace.is_zero() && program.is_held() && (bytes_out > 0 || stdin.has_queued());
        if !linger && (stderr.is_none() || !program.is_held()) {
            drop(stdin);
            return; // `program` drops: it is stopped in the background now.
        }
        let name = settings.name;
        child::reapers().spawn(async move {
            let stop = async move {
                if linger {
                    let finished = async {
                        stdin.drain().await;
                        program.wait().await;
                    };
                    tokio::select! {
                        _ = tokio::time::timeout(grace, finished) => {}
                        _ = child::graces_ended() => {}
                    }
                }
                program.stop().await;
            };
            let Some((pipe, buf)) = stderr else { return stop.await };
            let logging = log_until_eof(pipe, buf, &name, os_pid);
            tokio::pin!(stop, logging);
            tokio::select! {
                _ = &mut logging => stop.await,
                _ = &mut stop => {
                    let _ = tokio::time::timeout(Duration::from_millis(100), logging).await;
                }
            }
        });
    }

    /// A terminal is hung up before a stop's SIGTERM, as before a close's:
    /// its master's fds are closed (output is read no more).
    pub(super) fn hang_up(&mut self, out: &mut Output) {
        if self.pty.take().is_some() {
            out.pipe = None;
            self.stdin = Stdin::new(None);
        }
    }

    pub(super) fn log_stderr(&self, buf: &mut Vec<u8>, at_end: bool) {
        log_lines(&self.settings.name, self.os_pid, buf, at_end);
    }
}

/// Logs the complete lines of a program's stderr in `buf` (all of it at
/// its end), each as one line of portnode's log, at info with the target
/// `program` (shown whatever `--log-level`; the bridge logs these lines at
/// `notice`, so that they show as a plain port's stderr would), with the
/// program's name and OS pid, its text quoted (newlines, escapes and
/// control characters escaped): the program cannot start a log line of its
/// own, nor choose its level. A line longer than 4 KiB is cut.
pub(super) fn log_lines(program: &str, os_pid: u32, buf: &mut Vec<u8>, at_end: bool) {
    const MAX_LINE: usize = 4096;
    let mut start = 0;
    loop {
        let rest = &buf[start..];
        let (end, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) if i <= MAX_LINE => (start + i, start + i + 1),
            _ if rest.len() >= MAX_LINE => (start + MAX_LINE, start + MAX_LINE),
            _ if at_end && !rest.is_empty() => (buf.len(), buf.len()),
            _ => break,
        };
        let line = String::from_utf8_lossy(&buf[start..end]);
        info!(target: "program", program, os_pid, text = ?line, "program stderr");
        start = next;
    }
    buf.drain(..start);
}

/// Logs a program's stderr until its EOF (every process that held it is gone).
pub(super) async fn log_until_eof(mut pipe: pipe::Receiver, mut buf: Vec<u8>, program: &str, os_pid: u32) {
    loop {
        match read_some(Some(&mut pipe), &mut buf, READ_CHUNK).await {
            Ok(n) if n > 0 => log_lines(program, os_pid, &mut buf, false),
            _ => break,
        }
    }
    log_lines(program, os_pid, &mut buf, true);
}


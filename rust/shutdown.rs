//! What makes the node stop: SIGTERM, SIGINT, SIGHUP (its terminal or
//! session is gone), SIGQUIT, or (when asked) stdin closing. Each is a
//! clean shutdown: every program is stopped first.

use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, SignalKind};

/// Waits for a reason to stop and names it.
pub async fn signalled(exit_on_stdin_eof: bool) -> &'static str {
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut quit)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()), signal(SignalKind::quit()))
    else {
        return "cannot install signal handlers";
    };
    let stdin_closed = async {
        if !exit_on_stdin_eof {
            return std::future::pending().await;
        }
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 256];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = hup.recv() => "SIGHUP",
        _ = quit.recv() => "SIGQUIT",
        _ = stdin_closed => "stdin closed",
    }
}

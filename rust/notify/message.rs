//! What a program says on its notify socket: newline-separated
//! `KEY=VALUE` assignments (`READY=1\nSTATUS=Serving`), as sd_notify(3)
//! defines them. Keys portnode does not act on are ignored, as systemd
//! ignores keys it does not know; a value that is not what its key takes is
//! ignored too, line by line. Nothing a program sends can make this panic.

use tracing::debug;

/// One thing a program said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `READY=1`: startup is complete.
    Ready,
    /// `STOPPING=1`: it is shutting down.
    Stopping,
    /// `STATUS=...`: free-form text about its state.
    Status(Vec<u8>),
    /// `ERRNO=N`: why it failed, as an errno.
    Errno(i64),
    /// `MAINPID=N`: its main process is this one.
    MainPid(u32),
    /// `WATCHDOG=1`: it is alive.
    WatchdogKick,
    /// `WATCHDOG=trigger`: treat it as if its watchdog had expired.
    WatchdogTrigger,
}

/// The largest datagram read: sd_notify messages are a few lines, and
/// systemd reads at most a pipe buffer's worth.
pub const MAX_DATAGRAM: usize = 4096;

/// Parses one datagram. A datagram with a NUL byte, or empty, is not
/// sd_notify and says nothing.
pub fn parse(datagram: &[u8]) -> Vec<Notice> {
    if datagram.is_empty() || datagram.contains(&0) {
        debug!(len = datagram.len(), "notify: ignored a datagram that is empty or holds NUL");
        return Vec::new();
    }
    datagram.split(|&b| b == b'\n').filter(|line| !line.is_empty()).filter_map(assignment).collect()
}

fn assignment(line: &[u8]) -> Option<Notice> {
    let Some(eq) = line.iter().position(|&b| b == b'=') else {
        debug!(line = %String::from_utf8_lossy(line), "notify: ignored a line that is not KEY=VALUE");
        return None;
    };
    let (key, value) = (&line[..eq], &line[eq + 1..]);
    let notice = match key {
        b"READY" if value == b"1" => Some(Notice::Ready),
        b"STOPPING" if value == b"1" => Some(Notice::Stopping),
        b"STATUS" => Some(Notice::Status(value.to_vec())),
        b"ERRNO" => number(value).map(|n| Notice::Errno(n as i64)),
        b"MAINPID" => number(value).filter(|&n| n > 0 && n <= i32::MAX as u64).map(|n| Notice::MainPid(n as u32)),
        b"WATCHDOG" if value == b"1" => Some(Notice::WatchdogKick),
        b"WATCHDOG" if value == b"trigger" => Some(Notice::WatchdogTrigger),
        // Known to systemd, nothing for portnode to do (RELOADING, FDSTORE, ...), or unknown.
        _ => {
            debug!(line = %String::from_utf8_lossy(line), "notify: ignored an assignment");
            return None;
        }
    };
    if notice.is_none() {
        debug!(line = %String::from_utf8_lossy(line), "notify: ignored a bad value");
    }
    notice
}

/// A decimal number with no sign, of at most 10 digits.
fn number(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 10 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_assignment() {
        let said = parse(b"READY=1\nSTATUS=Serving 3 clients\nMAINPID=4242\nWATCHDOG=1\nWATCHDOG=trigger\nSTOPPING=1\nERRNO=2\n");
        assert_eq!(
            said,
            vec![
                Notice::Ready,
                Notice::Status(b"Serving 3 clients".to_vec()),
                Notice::MainPid(4242),
                Notice::WatchdogKick,
                Notice::WatchdogTrigger,
                Notice::Stopping,
                Notice::Errno(2),
            ]
        );
        // A STATUS may hold `=` and any bytes but NUL and newline.
        assert_eq!(parse(b"STATUS=a=b \xff"), vec![Notice::Status(b"a=b \xff".to_vec())]);
        assert_eq!(parse(b"STATUS="), vec![Notice::Status(Vec::new())]);
    }

    #[test]
    fn what_is_not_understood_says_nothing() {
        for junk in [
            &b""[..],
            b"\n\n",
            b"READY=1\0",
            b"READY",
            b"READY=2",
            b"READY=1 ",
            b"MAINPID=0",
            b"MAINPID=-5",
            b"MAINPID=99999999999",
            b"MAINPID=12a",
            b"ERRNO=",
            b"WATCHDOG=0",
            b"FDSTORE=1",
            b"=1",
            b"\xff\xfe=\x80",
        ] {
            assert_eq!(parse(junk), vec![], "{:?}", String::from_utf8_lossy(junk));
        }
        // A bad line does not spoil the good ones.
        assert_eq!(parse(b"nonsense\nREADY=1\nMAINPID=x"), vec![Notice::Ready]);
    }

    #[test]
    fn any_bytes_parse_without_panic() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 64) as usize;
            let alphabet = b"READYSTOPINGWCHMA=1\n\0x";
            let bytes: Vec<u8> = (0..len).map(|i| alphabet[((seed >> (i % 60)) as usize + i) % alphabet.len()]).collect();
            let _ = parse(&bytes);
        }
    }
}

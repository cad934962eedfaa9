//! Where the cookie comes from. The cookie is a secret: it is never logged,
//! and errors name the file, never the content.

use std::path::{Path, PathBuf};

/// The environment variable the Erlang bridge uses to hand over the cookie.
pub const COOKIE_ENV: &str = "PORTNODE_COOKIE";

/// Why no cookie could be had.
#[derive(Debug, thiserror::Error)]
pub enum CookieError {
    #[error("cannot read cookie file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cookie file {0} is empty")]
    Empty(PathBuf),
    #[error("no cookie: pass --cookie-file or --cookie-stdin, set ${COOKIE_ENV}, or create $HOME/.erlang.cookie")]
    Missing,
    #[error("cannot read the cookie from stdin: {0}")]
    Stdin(std::io::Error),
    #[error("--cookie-stdin: the first line of stdin is empty")]
    StdinEmpty,
}

/// Takes `$PORTNODE_COOKIE` out of the environment, so that no program
/// portnode starts inherits the cookie, and overwrites it where the kernel
/// shows the initial environment (`/proc/<pid>/environ`), so that no
/// process of the same user can read it there.
///
/// # Safety
/// It changes the process environment: no other thread may be running.
pub unsafe fn take_from_env() -> Option<String> {
    let value = std::env::var(COOKIE_ENV).ok().filter(|v| !v.is_empty());
    if value.is_some() {
        // SAFETY: getenv points into the environment block this process
        // started with (nothing has set the variable since), which the
        // kernel reads for /proc/<pid>/environ; the value's bytes are
        // overwritten in place, its length unchanged.
        unsafe {
            let name = std::ffi::CString::new(COOKIE_ENV).unwrap_or_default();
            let p = libc::getenv(name.as_ptr());
            if !p.is_null() {
                let len = libc::strlen(p);
                std::ptr::write_bytes(p, b'x', len);
            }
        }
    }
    // SAFETY: the caller guarantees that this process has a single thread.
    unsafe { std::env::remove_var(COOKIE_ENV) };
    value
}

/// Reads the cookie from the first line of standard input, one byte at a
/// time so that nothing after the line is consumed (the rest of stdin is
/// watched for EOF). Call before the runtime starts.
pub fn read_stdin_line() -> Result<String, CookieError> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        // SAFETY: read(2) of one byte into a valid buffer.
        match unsafe { libc::read(0, byte.as_mut_ptr().cast(), 1) } {
            1 if byte[0] == b'\n' => break,
            1 => line.push(byte[0]),
            0 => break,
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return Err(CookieError::Stdin(std::io::Error::last_os_error())),
        }
        if line.len() > 4096 {
            return Err(CookieError::Stdin(std::io::Error::other("first line of stdin longer than 4096 bytes")));
        }
    }
    let cookie = String::from_utf8_lossy(&line).trim().to_owned();
    if cookie.is_empty() {
        return Err(CookieError::StdinEmpty);
    }
    Ok(cookie)
}

/// The cookie: `--cookie`, else `--cookie-file`, else `from_env` (what
/// [`take_from_env`] took), else `$HOME/.erlang.cookie`.
pub fn load(value: Option<&str>, file: Option<&Path>, from_env: Option<&str>) -> Result<String, CookieError> {
    if let Some(v) = value {
        return Ok(v.to_owned());
    }
    if let Some(path) = file {
        return read(path);
    }
    if let Some(v) = from_env {
        return Ok(v.to_owned());
    }
    match std::env::var_os("HOME") {
        Some(home) => read(&Path::new(&home).join(".erlang.cookie")),
        None => Err(CookieError::Missing),
    }
}

fn read(path: &Path) -> Result<String, CookieError> {
    let text = std::fs::read_to_string(path).map_err(|source| CookieError::Read { path: path.to_owned(), source })?;
    let cookie = text.trim();
    if cookie.is_empty() {
        return Err(CookieError::Empty(path.to_owned()));
    }
    Ok(cookie.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_trims_a_cookie_file() {
        let dir = std::env::temp_dir().join(format!("portnode-cookie-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c");
        std::fs::write(&path, "SECRETVALUE\n").unwrap();
        assert_eq!(load(None, Some(&path), None).unwrap(), "SECRETVALUE");
        std::fs::write(&path, "\n").unwrap();
        let err = load(None, Some(&path), None).unwrap_err().to_string();
        assert!(err.contains("empty") && !err.contains("SECRET"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

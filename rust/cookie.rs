//! Where the cookie comes from, and how it is held. The cookie is a secret:
//! it is never logged, errors name the file, never the content, and
//! portnode keeps one copy of it in memory: a [`Secret`], wiped when it is
//! dropped. Every copy made on its way in (the environment's, a line of
//! stdin, a file's text) is wiped once the `Secret` is made, and the
//! processes forked at startup (the watchdog, the spawner), which need no
//! cookie, wipe the one they inherit ([`wipe_inherited`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// The cookie, held once; its bytes are zeroed when it is dropped.
pub struct Secret(String);

impl Secret {
    fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Notes where this copy is, so that a process forked from this one
    /// can wipe its inherited copy ([`wipe_inherited`]).
    pub fn note_for_forks(&self) {
        INHERITED_LEN.store(self.0.len(), Ordering::Relaxed);
        INHERITED.store(self.0.as_ptr().cast_mut(), Ordering::Release);
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Zeroes are valid UTF-8; the string is gone after this.
        // SAFETY: the bytes are written, never read as text again.
        wipe(unsafe { self.0.as_bytes_mut() });
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Zeroes `bytes` in a way the compiler may not leave out.
pub fn wipe(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        // SAFETY: a valid, aligned, exclusive reference.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(Ordering::SeqCst);
}

static INHERITED: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static INHERITED_LEN: AtomicUsize = AtomicUsize::new(0);

/// In a process forked from portnode after it read the cookie: zeroes this
/// process's copy of the [`Secret`] noted with [`Secret::note_for_forks`].
///
/// # Safety
/// Only in a freshly forked child that will never use that `Secret`.
pub unsafe fn wipe_inherited() {
    let p = INHERITED.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: the caller's copy of the noted Secret's bytes, which
        // nothing in this process reads again.
        wipe(unsafe { std::slice::from_raw_parts_mut(p, INHERITED_LEN.load(Ordering::Relaxed)) });
    }
}

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
pub unsafe fn take_from_env() -> Option<Secret> {
    let value = std::env::var(COOKIE_ENV).ok().filter(|v| !v.is_empty()).map(Secret::new);
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
pub fn read_stdin_line() -> Result<Secret, CookieError> {
    let mut line = Vec::new();
    let cookie = read_line_into(&mut line);
    wipe(&mut line);
    cookie
}

fn read_line_into(line: &mut Vec<u8>) -> Result<Secret, CookieError> {
    // Room for any cookie: the line never reallocates (and leaves no copy).
    line.reserve(4097);
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
    let cookie = Secret::new(String::from_utf8_lossy(line).trim().to_owned());
    if cookie.as_str().is_empty() {
        return Err(CookieError::StdinEmpty);
    }
    Ok(cookie)
}

/// The cookie: `--cookie`, else `--cookie-file`, else `from_env` (what
/// [`take_from_env`] took), else `$HOME/.erlang.cookie`. Moves the values
/// in: no copy is made.
pub fn load(value: Option<String>, file: Option<&Path>, from_env: Option<Secret>) -> Result<Secret, CookieError> {
    if let Some(v) = value {
        return Ok(Secret::new(v));
    }
    if let Some(path) = file {
        return read(path);
    }
    if let Some(v) = from_env {
        return Ok(v);
    }
    match std::env::var_os("HOME") {
        Some(home) => read(&Path::new(&home).join(".erlang.cookie")),
        None => Err(CookieError::Missing),
    }
}

fn read(path: &Path) -> Result<Secret, CookieError> {
    let text = std::fs::read_to_string(path).map_err(|source| CookieError::Read { path: path.to_owned(), source })?;
    let text = Secret::new(text);
    let cookie = text.as_str().trim();
    if cookie.is_empty() {
        return Err(CookieError::Empty(path.to_owned()));
    }
    Ok(Secret::new(cookie.to_owned()))
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
        assert_eq!(load(None, Some(&path), None).unwrap().as_str(), "SECRETVALUE");
        std::fs::write(&path, "\n").unwrap();
        let err = load(None, Some(&path), None).unwrap_err().to_string();
        assert!(err.contains("empty") && !err.contains("SECRET"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

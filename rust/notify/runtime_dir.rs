//! portnode's private runtime directory, where the programs' notify sockets
//! live: `portnode-<pid>-<random>` under `$XDG_RUNTIME_DIR`, else `/run`
//! (as root), else the temporary directory.
//!
//! Its name is chosen once ([`path`]), so that the watchdog can be told at
//! startup what to remove should portnode be killed; it is made only when a
//! program first needs a socket ([`ensure`]), and removed at shutdown
//! ([`remove`]). It is mode 0711: a program running as another user may
//! pass through it to its own directory, but no one may list it.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The directory's path (it may not exist yet).
pub fn path() -> &'static Path {
    static CHOSEN: OnceLock<PathBuf> = OnceLock::new();
    CHOSEN.get_or_init(|| base().join(format!("portnode-{}-{:016x}", std::process::id(), random())))
}

/// Made yet: at most one thread makes it.
static MADE: Mutex<bool> = Mutex::new(false);

/// The directory, made if it was not yet.
pub fn ensure() -> io::Result<&'static Path> {
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    if !*made {
        let dir = path();
        // Never a directory someone else made: create_dir fails on anything there.
        std::fs::DirBuilder::new().mode(0o700).create(dir)?;
        let meta = std::fs::symlink_metadata(dir)?;
        // SAFETY: geteuid cannot fail.
        if !meta.is_dir() || meta.uid() != unsafe { libc::geteuid() } {
            return Err(io::Error::other(format!("{} is not portnode's own directory", dir.display())));
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
        *made = true;
    }
    Ok(path())
}

/// Removes the directory and what is left in it (at shutdown, once every
/// program is gone).
pub fn remove() {
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    if *made {
        let _ = std::fs::remove_dir_all(path());
        *made = false;
    }
}

fn base() -> PathBuf {
    let usable = |p: &Path| p.is_absolute() && p.is_dir();
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).filter(|p| usable(p)) {
        return dir;
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 && usable(Path::new("/run")) {
        return PathBuf::from("/run");
    }
    std::env::temp_dir()
}

/// A random number, so that the name cannot be guessed and taken first.
fn random() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != 8 {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        return nanos as u64;
    }
    u64::from_ne_bytes(bytes)
}

//! An environment variable whose value is the program's own pid
//! (`WATCHDOG_PID=`, as sd_notify's watchdog wants it), which only the
//! child knows: its room is made before the clone, and the child, between
//! clone and exec, writes its pid there.

/// `NAME=` and room for ten digits and a NUL.
pub struct PidVar(Box<[u8; ROOM]>);

const WATCHDOG_PID: &[u8] = b"WATCHDOG_PID=";
const ROOM: usize = 32;

impl PidVar {
    /// `WATCHDOG_PID=`, its value to come.
    pub fn watchdog() -> PidVar {
        let mut var = Box::new([0u8; ROOM]);
        var[..WATCHDOG_PID.len()].copy_from_slice(WATCHDOG_PID);
        PidVar(var)
    }

    /// The variable, for `envp`: it must outlive the child's exec.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.0.as_mut_ptr()
    }

    /// In the child: writes its pid after the `=`. No allocation, one
    /// system call.
    ///
    /// # Safety
    /// `var` comes from [`PidVar::as_mut_ptr`] of a live `PidVar`.
    pub unsafe fn fill(var: *mut u8) {
        // SAFETY: the name is followed by ROOM - its length (> 11) bytes.
        unsafe { write_pid(var.add(WATCHDOG_PID.len())) }
    }
}

/// Writes the calling process's pid in decimal, then a NUL, at `at` (room
/// for 11 bytes). In the child: no allocation, one system call.
///
/// # Safety
/// `at` points to at least 11 writable bytes.
unsafe fn write_pid(at: *mut u8) {
    // SAFETY: getpid as a raw system call (no libc cache in a cloned
    // child, and no libc wrapper: see `program::syscall`).
    let mut pid = unsafe { crate::syscall!(libc::SYS_getpid) } as u64;
    let mut digits = [0u8; 10];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (pid % 10) as u8;
        n += 1;
        pid /= 10;
        if pid == 0 || n == digits.len() {
            break;
        }
    }
    for i in 0..n {
        // SAFETY: within the 11 bytes the caller vouches for.
        unsafe { *at.add(i) = digits[n - 1 - i] };
    }
    // SAFETY: as above.
    unsafe { *at.add(n) = 0 };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_is_written_in_place() {
        let mut var = PidVar::watchdog();
        // SAFETY: a live PidVar.
        unsafe { PidVar::fill(var.as_mut_ptr()) };
        let text = std::ffi::CStr::from_bytes_until_nul(&var.0[..]).unwrap().to_str().unwrap().to_owned();
        assert_eq!(text, format!("WATCHDOG_PID={}", std::process::id()));
    }
}

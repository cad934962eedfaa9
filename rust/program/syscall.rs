//! System calls for a program's child between clone and exec, without
//! libc's wrappers.
//!
//! The spawner does not wait for a child's exec (see `spawner::exec`): the
//! child runs in the spawner's memory while the spawner goes on, and libc's
//! wrappers would write a failure's code to the thread-local `errno`, which
//! the child shares with the spawner's thread. These return it instead, as
//! the kernel does: a negative result is `-errno`.
//!
//! Where no such call is written here (neither x86_64 nor aarch64), the
//! spawner waits for each exec, as `posix_spawn` does, and these go through
//! libc, which is then safe.

/// Whether the spawner may go on while its child has not exec'd yet: only
/// where [`raw`] does not go through libc.
pub const CHILD_RUNS_ALONE: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// System call `number` with `args`: its result, or `-errno`.
///
/// # Safety
/// As the system call itself.
#[cfg(target_arch = "x86_64")]
pub unsafe fn raw(number: libc::c_long, args: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the x86_64 system call convention; the caller vouches for the call.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") number as isize => ret,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
            in("r9") args[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// System call `number` with `args`: its result, or `-errno`.
///
/// # Safety
/// As the system call itself.
#[cfg(target_arch = "aarch64")]
pub unsafe fn raw(number: libc::c_long, args: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the aarch64 system call convention; the caller vouches for the call.
    unsafe {
        std::arch::asm!(
            "svc 0",
            in("x8") number as usize,
            inlateout("x0") args[0] as isize => ret,
            in("x1") args[1],
            in("x2") args[2],
            in("x3") args[3],
            in("x4") args[4],
            in("x5") args[5],
            options(nostack),
        );
    }
    ret
}

/// System call `number` with `args`: its result, or `-errno` (through
/// libc: the spawner waits for each exec here, see [`CHILD_RUNS_ALONE`]).
///
/// # Safety
/// As the system call itself.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub unsafe fn raw(number: libc::c_long, args: [usize; 6]) -> isize {
    // SAFETY: as the system call itself.
    let ret = unsafe { libc::syscall(number, args[0], args[1], args[2], args[3], args[4], args[5]) };
    if ret == -1 {
        -(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL) as isize)
    } else {
        ret as isize
    }
}

/// The errno of a failed [`raw`] result (`None`: it succeeded).
pub fn failed(ret: isize) -> Option<i32> {
    (-4095..0).contains(&ret).then_some(-ret as i32)
}

/// `raw` with up to six arguments, each cast to `usize`.
#[macro_export]
macro_rules! syscall {
    ($number:expr $(, $arg:expr)* $(,)?) => {{
        let mut args = [0usize; 6];
        let given: &[usize] = &[$($arg as usize),*];
        args[..given.len()].copy_from_slice(given);
        $crate::program::syscall::raw($number, args)
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_call_returns_its_errno_and_leaves_errno_alone() {
        // SAFETY: close of an fd that cannot be open, and getpid.
        unsafe {
            *libc::__errno_location() = 0;
            let ret = crate::syscall!(libc::SYS_close, -1i32 as u32);
            assert_eq!(failed(ret), Some(libc::EBADF));
            if CHILD_RUNS_ALONE {
                assert_eq!(*libc::__errno_location(), 0, "errno was written");
            }
            let pid = crate::syscall!(libc::SYS_getpid);
            assert_eq!(failed(pid), None);
            assert_eq!(pid as u32, std::process::id());
        }
    }
}

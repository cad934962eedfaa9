//! The steps a program's child takes between clone and exec, so that a
//! failure names the one that failed (`chdir`, `setuid`, ...), not only
//! its errno.

/// One step of the child before exec. `Setup` covers what portnode does for
/// itself (signals, the death signal, the group, the cgroup, the fds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    Setup = 1,
    Chdir = 2,
    Rlimit = 3,
    Nice = 4,
    Setgroups = 5,
    Setgid = 6,
    Setuid = 7,
    Exec = 8,
}

impl Step {
    pub fn from_u8(n: u8) -> Option<Step> {
        Some(match n {
            1 => Step::Setup,
            2 => Step::Chdir,
            3 => Step::Rlimit,
            4 => Step::Nice,
            5 => Step::Setgroups,
            6 => Step::Setgid,
            7 => Step::Setuid,
            8 => Step::Exec,
            _ => return None,
        })
    }

    /// As a log names it: the system call.
    pub fn name(self) -> &'static str {
        match self {
            Step::Setup => "setup",
            Step::Chdir => "chdir",
            Step::Rlimit => "setrlimit",
            Step::Nice => "setpriority",
            Step::Setgroups => "setgroups",
            Step::Setgid => "setgid",
            Step::Setuid => "setuid",
            Step::Exec => "execve",
        }
    }
}

/// A program's child failed before exec: the step, and its errno. Carried
/// inside an `io::Error` (see [`errno_of`], [`step_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{} failed: {}", .step.name(), std::io::Error::from_raw_os_error(*.errno))]
pub struct ChildFailed {
    pub step: Step,
    pub errno: i32,
}

impl ChildFailed {
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::new(std::io::Error::from_raw_os_error(self.errno).kind(), self)
    }
}

/// The errno of an error, whether the OS's own or a [`ChildFailed`].
pub fn errno_of(e: &std::io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| e.get_ref()?.downcast_ref::<ChildFailed>().map(|c| c.errno))
}

/// The child's step that failed, if the error is a [`ChildFailed`].
pub fn step_of(e: &std::io::Error) -> Option<Step> {
    e.get_ref()?.downcast_ref::<ChildFailed>().map(|c| c.step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_survives_its_byte() {
        for n in 0..=255u8 {
            if let Some(step) = Step::from_u8(n) {
                assert_eq!(step as u8, n);
            }
        }
        assert_eq!(Step::from_u8(8), Some(Step::Exec));
        assert_eq!(Step::from_u8(0), None);
    }

    #[test]
    fn a_child_failure_keeps_its_errno_and_step_in_an_io_error() {
        let e = ChildFailed { step: Step::Chdir, errno: libc::EACCES }.into_io();
        assert_eq!((errno_of(&e), step_of(&e)), (Some(libc::EACCES), Some(Step::Chdir)));
        assert!(e.to_string().starts_with("chdir failed: Permission denied"), "{e}");
        let plain = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!((errno_of(&plain), step_of(&plain)), (Some(libc::ENOENT), None));
    }
}

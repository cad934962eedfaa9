//! Where a program's stderr goes: portnode's own settings of it, which the
//! spawner's child sets up.

/// Where the program's stderr goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stderr {
    /// The default: a pipe of its own, whose lines portnode logs, each
    /// with the program's name and quoted as text (a plain port writes to
    /// the VM's stderr; a program must not write into portnode's own log,
    /// nor choose the level of a line there).
    #[default]
    Log,
    /// `stderr_to_stdout`.
    ToStdout,
    /// `{stderr, message}`: the owner gets `{H, {stderr, Data}}`.
    Message,
}


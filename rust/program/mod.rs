//! A program as its child sees it between clone and exec: the privileges
//! it takes on, where its stderr goes, and the steps it takes (so that a
//! failure names the one that failed). Ports make these from a port's
//! settings; the spawner's child applies them. It sits below both, so that
//! every import goes down a floor.

pub mod privileges;
pub mod stdio;
pub mod step;
pub mod syscall;

pub use privileges::Privileges;
pub use stdio::Stderr;
pub use step::{ChildFailed, Step};

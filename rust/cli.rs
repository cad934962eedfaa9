//! Command-line options of the `portnode` binary.

use clap::{ArgGroup, Parser};
use std::net::IpAddr;
use std::path::PathBuf;

/// portnode: a hidden Erlang node that runs and supervises external programs.
#[derive(Debug, Parser)]
#[command(version, about, group(ArgGroup::new("node_name").required(true).args(["sname", "name"])))]
pub struct Cli {
    /// Short node name, as `erl -sname` (NAME or NAME@HOST without dots).
    #[arg(long, value_name = "NAME")]
    pub sname: Option<String>,

    /// Long node name, as `erl -name` (NAME@HOST, HOST fully qualified).
    #[arg(long, value_name = "NAME@HOST")]
    pub name: Option<String>,

    /// File holding the cookie (default: $HOME/.erlang.cookie, as erl).
    #[arg(long, value_name = "PATH")]
    pub cookie_file: Option<PathBuf>,

    /// The cookie itself, for parity with `erl -setcookie`. Visible to every
    /// user in `ps`: prefer --cookie-file or --cookie-stdin.
    #[arg(long, value_name = "VALUE")]
    pub cookie: Option<String>,

    /// Read the cookie from the first line of standard input (how the
    /// Erlang bridge hands it over: it never appears in argv or environ).
    #[arg(long)]
    pub cookie_stdin: bool,

    /// How programs are contained: `auto` (a cgroup v2 leaf per program
    /// where the hierarchy is writable, else process groups), `off`
    /// (process groups and subreaper only), or a cgroup v2 directory to
    /// create portnode's subtree in.
    #[arg(long, value_name = "auto|off|PATH", default_value = "auto")]
    pub cgroup: crate::containment::Setting,

    /// Address to accept distribution connections on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub listen: IpAddr,

    /// Port to accept distribution connections on (0: any free port).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub port: u16,

    /// Node to connect to at start and stay connected to (repeatable).
    #[arg(long, value_name = "NODE")]
    pub connect: Vec<String>,

    /// Seconds, like the kernel's net_ticktime: a peer silent this long is dropped.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub net_ticktime: u64,

    /// Largest distribution frame accepted from a peer, in bytes. A larger
    /// one ends the connection. Decoding a message takes at most 32 times
    /// its size, plus 64 MiB for each of its two terms (its control and its
    /// payload); one that would take more (a term of a great many one-byte
    /// elements, `[]`) is dropped with a warning, and the connection stays.
    #[arg(long, value_name = "BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_frame: usize,

    /// Shut down when standard input closes (how an owning Erlang port controls it).
    #[arg(long)]
    pub exit_on_stdin_eof: bool,

    /// Log level (off, error, warn, info, debug, trace); RUST_LOG wins if set.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
}

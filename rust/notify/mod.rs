//! sd_notify, systemd's readiness protocol, as portnode speaks it: each
//! program that is to say it is ready (`{ready, notify}`) or alive
//! (`{watchdog, Ms}`) gets `NOTIFY_SOCKET`, a datagram socket of its own
//! ([`socket`]) in portnode's private runtime directory ([`runtime_dir`]),
//! and what it sends there is parsed into [`message::Notice`]s.
//!
//! Many daemons already speak it (PostgreSQL, redis, HAProxy, anything
//! built on libsystemd), and any program can in a few lines: a datagram of
//! `KEY=VALUE` lines to the socket's path. A socket per program (in a
//! directory only the program's user may enter) and the sender's
//! credentials, checked against the program's processes, keep one
//! program's datagrams from counting for another.

pub mod message;
pub mod runtime_dir;
pub mod socket;

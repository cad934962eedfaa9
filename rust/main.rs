use clap::Parser;
use portnode::cli::Cli;
use tracing_subscriber::EnvFilter;

fn main() {
    // The cookie will be in this process's memory: no core dump of it, and
    // no process of the same user reading it through /proc/<pid>/mem or
    // ptrace. The watchdog and the spawner, forked from it, inherit this;
    // the programs, exec'd, do not.
    // SAFETY: prctl with plain integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        eprintln!("portnode: cannot make itself non-dumpable: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    let cli = Cli::parse();
    // SAFETY: no other thread exists yet. The programs portnode starts
    // inherit its environment, and the cookie must not reach them.
    let mut env_cookie = unsafe { portnode::cookie::take_from_env() };
    if cli.cookie_stdin {
        match portnode::cookie::read_stdin_line() {
            Ok(cookie) => env_cookie = Some(cookie),
            Err(e) => {
                eprintln!("portnode: {e}");
                std::process::exit(1);
            }
        }
    }
    raise_fd_limit();
    // The watchdog and the spawner, forked next, wipe their copy of it.
    if let Some(cookie) = &env_cookie {
        cookie.note_for_forks();
    }
    // Before any thread exists: the watchdog is forked from this process.
    if let Err(e) = portnode::port::watchdog::start() {
        eprintln!("portnode: cannot start the watchdog: {e}");
        std::process::exit(1);
    }
    // Before any thread, and after the watchdog (whose pipe it must not hold).
    if let Err(e) = portnode::spawner::start() {
        eprintln!("portnode: cannot start the spawner: {e}");
        std::process::exit(1);
    }
    // Programs' stderr (target `program`) shows at any level but `off`, as
    // a plain port's stderr would.
    let directives = if cli.log_level == "off" { cli.log_level.clone() } else { format!("{},program=info", cli.log_level) };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portnode: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(portnode::run(cli, env_cookie)) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            1
        }
    };
    // A blocked stdin reader must not hold the process open.
    std::process::exit(code);
}

/// Every program holds two or three pipe ends here: lift the soft limit on
/// open files to the hard one.
fn raise_fd_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

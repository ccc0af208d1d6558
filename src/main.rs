//! forkecho: a blocking, process-per-connection TCP echo server (RFC 862) for Linux.
//!
//! `main` parses the options and dispatches on the mode they ask for: serve (`server`), echo one
//! connection a launcher accepted (`inetd`), probe an echo server (`forkecho ping`: `ping`),
//! drive a server's control socket (`forkecho ctl`: `ctl`), or print the man page or a
//! completion script. It is the one place an error is printed: once, as one line on stderr, with
//! exit status 1. clap prints its own usage errors and exits with 2.
//!
//! Where things live: `cli/` is what the user types (the fault options read once, in
//! `cli/faults.rs`) and `settings` what it means to each side; `setup/` holds what happens before
//! the first fork (the listening sockets, systemd's sockets, privileges, the certificates);
//! `parent/` the accept loop and everything it keeps (`state`, then a file per part of the loop:
//! its module docs list them) with `parent/fork.rs`, the one place that forks; `child/` the other
//! side of that call: what a child undoes, then one connection's echo from first byte to close
//! line. What both sides touch has a module of its own that says who writes it: `shared`
//! (memory), `signals`, `sandbox`, `faults` (and `selectors`, which connections get them),
//! `peer` (and `network`, what addresses are in which networks), `address` (where a service is,
//! for the server and `forkecho ping`), the crate `forkecho_control` (the control socket's
//! requests, for the server, `forkecho ctl` and `forkecho-fixture`), `log` (and `nowait`, how
//! it writes without waiting). No file imports a file above it, and no two files import each
//! other.

mod address;
mod child;
mod cli;
mod clock;
mod ctl;
mod deadline;
mod faults;
mod groups;
mod inetd;
mod log;
mod memory;
mod network;
mod nowait;
mod parent;
mod peer;
mod ping;
mod rate;
mod sandbox;
mod selectors;
mod server;
mod settings;
mod setup;
mod shared;
mod signals;
mod sockopt;
mod testhooks;
mod tls;
mod tls_errors;
mod websocket_faults;

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use cli::Mode;
use log::logln;

fn main() -> ExitCode {
    // Before anything else, even parsing the options: a serving process must not die of a
    // `pkill -USR1 forkecho` or a SIGTERM sent while it starts. The other modes give the
    // signals back to their defaults once the options say which mode this is.
    let caught = parent::catch_signals_early();
    let options = cli::parse_or_exit();
    match options.mode() {
        Mode::Serve => {
            if let Err(err) = caught {
                logln!("fatal: {err:#}");
                return ExitCode::FAILURE;
            }
        }
        _ => parent::release_signals(),
    }
    log::configure(options.log_format == "json", options.log_time);
    log::install_panic_hook();
    testhooks::init();
    let result = match options.mode() {
        Mode::Serve => {
            server::run(&settings::Settings::from_options(&options)).map(|()| ExitCode::SUCCESS)
        }
        Mode::Inetd => inetd::run(&settings::Settings::from_options(&options)).map(ExitCode::from),
        Mode::Man => print("the man page", |out| cli::man::write_man(out)),
        Mode::Completions(shell) => print("the completions", |out| {
            cli::man::write_completions(shell, out)
        }),
        Mode::Ping => {
            let Some(cli::Command::Ping(ping)) = &options.command else {
                unreachable!("Mode::Ping comes from the ping subcommand")
            };
            Ok(ExitCode::from(ping::run(ping)))
        }
        Mode::Ctl => {
            let Some(cli::Command::Ctl(ctl)) = &options.command else {
                unreachable!("Mode::Ctl comes from the ctl subcommand")
            };
            Ok(ExitCode::from(ctl::run(ctl)))
        }
    };
    result.unwrap_or_else(|err| {
        logln!("fatal: {err:#}");
        ExitCode::FAILURE
    })
}

/// Writes `what` to stdout with `write`, flushed. A reader that went away early is no error.
fn print(
    what: &str,
    write: impl FnOnce(&mut io::StdoutLock) -> io::Result<()>,
) -> Result<ExitCode> {
    let mut out = io::stdout().lock();
    match write(&mut out).and_then(|()| out.flush()) {
        // The reader stopped early (`forkecho --man | head`): nothing to complain about.
        Err(err) if err.kind() != io::ErrorKind::BrokenPipe => {
            Err(err).with_context(|| format!("unable to write {what}"))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    /// A signal that lands before the handlers are in place finds the default action (SIGUSR1,
    /// SIGTERM: death); the man page promises the window is only the kernel's loading of the
    /// program. So catching them stays the very first thing `main` does.
    #[test]
    fn catching_the_signals_is_the_first_thing_main_does() {
        let source = include_str!("main.rs");
        let body = source.split_once("fn main() -> ExitCode {\n").unwrap().1;
        let first = body
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty() && !line.starts_with("//"))
            .unwrap();
        assert_eq!(first, "let caught = parent::catch_signals_early();");
    }
}

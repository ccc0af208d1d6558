//! forkecho: a blocking, process-per-connection TCP echo server (RFC 862) for Linux.
//!
//! `main` parses the options and dispatches on the mode they ask for: serve (`server`), echo one
//! connection a launcher accepted (`inetd`), probe an echo server (`forkecho ping`: `ping`), or
//! print the man page or a completion script. It is
//! the one place an error is printed: once, as one line on stderr, with exit status 1. clap
//! prints its own usage errors and exits with 2.
//!
//! Where things live: `setup/` holds what happens before the first fork (the listening socket,
//! systemd's sockets, privileges); `parent/` the accept loop and everything it keeps (signals, the
//! SIGCHLD reaper, the table of children, limits, statistics) and `parent/fork.rs`, the one place
//! that forks; `child/` the other side of that call: what a child undoes, then one connection's
//! echo from first byte to close line.

mod child;
mod cli;
mod debug;
mod inetd;
mod log;
mod memory;
mod parent;
mod ping;
mod server;
mod setup;
mod wait;

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use cli::Mode;

fn main() -> ExitCode {
    let options = cli::Options::parse();
    log::install_panic_hook();
    debug::init();
    let result = match options.mode() {
        Mode::Serve => server::run(&options).map(|()| ExitCode::SUCCESS),
        Mode::Inetd => inetd::run(&options).map(ExitCode::from),
        Mode::Man => print("the man page", |out| cli::write_man(out)),
        Mode::Completions(shell) => {
            print("the completions", |out| cli::write_completions(shell, out))
        }
        Mode::Ping => {
            let Some(cli::Command::Ping(ping)) = &options.command else {
                unreachable!("Mode::Ping comes from the ping subcommand")
            };
            Ok(ExitCode::from(ping::run(ping)))
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

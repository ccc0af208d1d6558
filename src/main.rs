//! forkecho: a blocking, process-per-connection TCP echo server (RFC 862) for Linux.
//!
//! `main` parses the options, runs the server (or, with `--inetd`, serves one connection) and
//! prints a setup failure once, as one line on stderr, with exit status 1. clap prints its own
//! usage errors and exits with 2. `--man` and `--completions` print what clap_mangen and
//! clap_complete generate from the options and exit.

mod activation;
mod child;
mod children;
mod cli;
mod echo;
mod inetd;
mod listener;
mod log;
mod memory;
mod privileges;
mod reaper;
mod server;
mod signals;
mod splice;
mod stats;

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

fn main() -> ExitCode {
    let options = cli::Options::parse();
    let result = if options.man {
        print("the man page", |out| cli::write_man(out))
    } else if let Some(shell) = options.completions {
        print("the completions", |out| cli::write_completions(shell, out))
    } else if options.inetd {
        inetd::serve(&options).map(|code| ExitCode::from(code as u8))
    } else {
        server::run(&options).map(|()| ExitCode::SUCCESS)
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

//! forkecho: a blocking, process-per-connection TCP echo server (RFC 862) for Linux.
//!
//! `main` parses the options, runs the server and prints a setup failure once, as one line on
//! stderr, with exit status 1. clap prints its own usage errors and exits with 2.

mod child;
mod children;
mod cli;
mod echo;
mod listener;
mod log;
mod memory;
mod privileges;
mod reaper;
mod server;
mod signals;
mod splice;
mod stats;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let options = cli::Options::parse();
    match server::run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            logln!("fatal: {err:#}");
            ExitCode::FAILURE
        }
    }
}

//! Command-line options, as the user types them: the one definition behind `--help`, the man
//! page and the completions (`man`): the server's `options`, with the `faults` flattened into
//! them, the subcommands' in `commands`, the help sections in `help`, and the parsers for
//! their values in `values`.
//!
//! clap rejects a bad value with a message that quotes it (`invalid value '70000' for '--port
//! <PORT>'`) and exit status 2, before anything is bound. What the options mean to the parent,
//! the listeners and the children is worked out once, in `crate::settings`; the fault options
//! alone are read again at run time (the control socket, in-band lines), through
//! `faults_from_flags`.
//!
//! The build script compiles this folder too, to write the man page and the completions that
//! `cargo deb` packages (see build.rs): so it depends only on std, clap and `crate::faults`.

mod commands;
mod dump;
mod faults;
mod help;
pub mod man;
mod options;
mod parse;
pub mod values;
mod websocket;

pub use commands::{Command, CtlOptions, PingOptions};
pub use faults::fault_flags;
pub use help::TLS_FAULTS;
pub use options::{Mode, Options};
pub use parse::{faults_from_flags, parse_or_exit};
pub use values::{Bind, Rate};

#[cfg(test)]
mod tests;

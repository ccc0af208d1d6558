//! Reading the command line, the two ways forkecho does: `parse_or_exit` at startup (clap's
//! errors, with tips where clap's own message would not help), and `faults_from_flags`, the
//! fault options again at run time (the control socket's `faults`, an in-band `FORKECHO` line),
//! read by the same definition. Called by `main`, `parent::control` and `child::inband`.

use clap::Parser;

use super::faults::FAULT_OPTIONS;
use super::options::Options;
use crate::faults::Faults;

/// Parses the command line, or exits as clap does (status 2) with what is wrong: clap's own
/// message, and ours where clap's would not help (`FaultOptions::unshaped`; `forkecho ping
/// HOST PORT`, which takes HOST:PORT).
pub fn parse_or_exit() -> Options {
    let options = Options::try_parse().unwrap_or_else(|err| {
        if let Some(tip) = ping_tip(&err, std::env::args().skip(1)) {
            // clap's message and the tip in one write, as every line forkecho writes.
            let text = format!("{}\n{tip}\n", err.render());
            let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
            std::process::exit(2);
        }
        err.exit()
    });
    if let Some(why) = options.faults.unshaped() {
        let mut command = <Options as clap::CommandFactory>::command();
        command
            .error(clap::error::ErrorKind::MissingRequiredArgument, why)
            .exit();
    }
    if options.faults.websocket().any() && !options.websocket.websocket {
        let mut command = <Options as clap::CommandFactory>::command();
        let why = "--websocket-close, --websocket-ping and --websocket-no-pong act on WebSocket \
                   sessions: add --websocket";
        command
            .error(clap::error::ErrorKind::MissingRequiredArgument, why)
            .exit();
    }
    options
}

/// The faults `flags` (name without dashes, value) ask for, read by the command line's own
/// parser, so names, syntax and checks are the same; None if they ask for none. An error says
/// what is wrong, quoting the value.
pub fn faults_from_flags<N: AsRef<str>>(flags: &[(N, String)]) -> Result<Option<Faults>, String> {
    let mut args = vec!["forkecho".to_string()];
    for (name, value) in flags {
        let name = name.as_ref();
        if !FAULT_OPTIONS.contains(&name) {
            return Err(format!(
                "\"{name}\" is no fault: one of {}",
                FAULT_OPTIONS.join(", ")
            ));
        }
        args.push(format!("--{name}"));
        args.push(value.clone());
    }
    let options = Options::try_parse_from(&args).map_err(|err| {
        let text = err.to_string();
        let first = text.lines().next().unwrap_or_default();
        first.trim_start_matches("error: ").to_string()
    })?;
    if let Some(why) = options.faults.unshaped() {
        return Err(why);
    }
    let seed = options
        .faults
        .seed
        .unwrap_or_else(crate::faults::random_seed);
    Ok(options.faults.faults(seed))
}

/// `forkecho ping HOST PORT` (two words, the second a port): the tip to write HOST:PORT.
fn ping_tip(err: &clap::Error, args: impl Iterator<Item = String>) -> Option<String> {
    let args: Vec<String> = args.collect();
    let unexpected = err.kind() == clap::error::ErrorKind::UnknownArgument;
    let words: Vec<&String> = args
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    match (args.first().map(String::as_str), &words[..]) {
        (Some("ping"), [host, port, ..]) if unexpected && port.parse::<u16>().is_ok() => Some(
            format!("tip: forkecho ping takes HOST:PORT in one word: forkecho ping {host}:{port}"),
        ),
        _ => None,
    }
}

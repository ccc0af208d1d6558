//! `forkecho ctl PATH COMMAND [ARGS]`: the client of the control socket (`--control PATH`, served
//! by `parent::control`).
//!
//! It turns a command line into the one JSON request line the server reads (`request`, a
//! `forkecho_control::Request`), sends it, and prints the reply line as it came. Exit status: 0
//! when the reply says `"ok": true`, 1 when the server refused, 2 for usage errors and a socket
//! that cannot be reached or does not answer within `--timeout`: the same convention as
//! `forkecho ping`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use serde_json::Value;

use crate::cli::CtlOptions;
use crate::log::logln;
use forkecho_control::{FaultChange, NAMES, Request};

/// The exit status for usage errors and an unreachable server.
const USAGE: u8 = 2;

/// Sends the command and prints the reply; returns the exit status.
pub fn run(options: &CtlOptions) -> u8 {
    let request = match request(&options.command, &options.args) {
        Ok(request) => request,
        Err(message) => {
            logln!("ctl: {message}");
            return USAGE;
        }
    };
    let path = options.socket.display();
    let reply = UnixStream::connect(&options.socket).and_then(|mut stream| {
        stream.set_read_timeout(Some(options.timeout))?;
        stream.set_write_timeout(Some(options.timeout))?;
        // A server that refuses this client answers and closes before reading the request, so
        // the write may fail (EPIPE) with the answer already waiting: read it either way.
        let sent = stream.write_all(format!("{request}\n").as_bytes());
        let mut line = String::new();
        let read = BufReader::new(stream).read_line(&mut line);
        match (sent, read) {
            (_, Ok(_)) if !line.is_empty() => Ok(line),
            (Err(err), _) | (_, Err(err)) => Err(err),
            (Ok(()), Ok(_)) => Ok(line),
        }
    });
    let line = match reply {
        Ok(line) if !line.is_empty() => line,
        Ok(_) => {
            logln!("ctl: {path} closed without a reply");
            return USAGE;
        }
        Err(err) => {
            logln!("ctl: {path}: {err}");
            return USAGE;
        }
    };
    print!("{line}");
    match serde_json::from_str::<Value>(&line) {
        Ok(reply) if reply["ok"] == true => 0,
        Ok(_) => 1,
        Err(_) => {
            logln!("ctl: {path} answered something that is not JSON");
            USAGE
        }
    }
}

/// The request line for `command` and its `args`: a JSON object given as it is, or the typed
/// request the command line names.
pub fn request(command: &str, args: &[String]) -> Result<Value, String> {
    if command.starts_with('{') {
        if !args.is_empty() {
            return Err("a JSON request takes no further arguments".into());
        }
        return serde_json::from_str(command).map_err(|err| format!("'{command}': {err}"));
    }
    from_words(command, args).map(|request| request.to_json())
}

/// `forkecho ctl`'s reading of its command and arguments: the typed request they name.
fn from_words(command: &str, args: &[String]) -> Result<Request, String> {
    let plain = |request: Request| match args {
        [] => Ok(request),
        _ => Err(format!("{command} takes no arguments")),
    };
    let from = || match args {
        [] => Ok(None),
        [flag, net] if flag == "--from" => Ok(Some(net.clone())),
        _ => Err(format!("{command} takes nothing, or --from ADDR[/LEN]")),
    };
    match command {
        "status" => plain(Request::Status),
        "down" => plain(Request::Down),
        "up" => plain(Request::Up),
        "blackhole" => plain(Request::Blackhole),
        "close" => Ok(Request::Close { from: from()? }),
        "reset" => Ok(Request::Reset { from: from()? }),
        "faults" => fault_words(args).map(Request::Faults),
        other => Err(format!("unknown command '{other}': {}", NAMES.join(", "))),
    }
}

/// `faults --clear`, or `faults --NAME VALUE ...` (also `--NAME=VALUE`).
fn fault_words(args: &[String]) -> Result<FaultChange, String> {
    if args == ["--clear"] {
        return Ok(FaultChange::Clear);
    }
    let usage = "faults takes fault options (--delay 100 --reset-after 500), or --clear";
    if args.is_empty() {
        return Err(usage.into());
    }
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let flags = crate::cli::fault_flags(&words).map_err(|why| format!("{why}: {usage}"))?;
    let flags = (flags.into_iter())
        .map(|(name, value)| (name.to_string(), value))
        .collect();
    Ok(FaultChange::Set(flags))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn command_lines_become_the_requests_the_server_reads() {
        assert_eq!(request("status", &[]).unwrap(), json!({"cmd": "status"}));
        assert_eq!(
            request("faults", &args(&["--delay", "100:20", "--reset-after=500"])).unwrap(),
            json!({"cmd": "faults", "set": {"delay": "100:20", "reset-after": "500"}})
        );
        assert_eq!(
            request("faults", &args(&["--clear"])).unwrap(),
            json!({"cmd": "faults", "clear": true})
        );
        assert_eq!(
            request("reset", &args(&["--from", "10.0.0.0/8"])).unwrap(),
            json!({"cmd": "reset", "from": "10.0.0.0/8"})
        );
        assert_eq!(
            request("{\"cmd\":\"up\"}", &[]).unwrap(),
            json!({"cmd": "up"})
        );
        for (command, bad) in [
            ("status", &["x"][..]),
            ("faults", &[][..]),
            ("faults", &["delay"][..]),
            ("faults", &["--delay"][..]),
            ("reset", &["--from"][..]),
            ("nope", &[][..]),
        ] {
            assert!(request(command, &args(bad)).is_err(), "{command} {bad:?}");
        }
    }
}

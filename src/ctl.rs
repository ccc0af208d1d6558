//! `forkecho ctl PATH COMMAND [ARGS]`: the client of the control socket (`--control PATH`, served
//! by `parent::control`).
//!
//! It turns a command line into the one JSON request line the server reads (`request`, a
//! `control_request::Request`), sends it, and prints the reply line as it came. Exit status: 0
//! when the reply says `"ok": true`, 1 when the server refused, 2 for usage errors and a socket
//! that cannot be reached or does not answer within `--timeout`: the same convention as
//! `forkecho ping`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use serde_json::Value;

use crate::cli::CtlOptions;
use crate::control_request::Request;
use crate::log::logln;

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
/// request the command line names (`control_request`).
pub fn request(command: &str, args: &[String]) -> Result<Value, String> {
    if command.starts_with('{') {
        if !args.is_empty() {
            return Err("a JSON request takes no further arguments".into());
        }
        return serde_json::from_str(command).map_err(|err| format!("'{command}': {err}"));
    }
    Request::from_words(command, args).map(|request| request.to_json())
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

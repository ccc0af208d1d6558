//! `--control PATH`: a test's hand on the running server, through a Unix socket the parent's loop
//! serves without ever blocking on it.
//!
//! One JSON object per line in, one per line out, each reply with `"ok"` and, when false,
//! `"error"` saying what was wrong (`forkecho ctl` is the client). The socket file is the
//! server's owner's alone (mode 0600), and a process whose SO_PEERCRED uid is neither the
//! server's nor root's is answered with an error and closed. At most `MOST` control connections
//! at once; a request line is at most `LINE_MAX` bytes; a connection idle for `IDLE` is closed.
//! Every read and write is non-blocking, and a client that does not read its replies is dropped.
//!
//! The commands change what the loop does next, never a connection already being served:
//! - `status`: the `stats` line's counts, the faults in force and from which connection, the
//!   listeners and whether they are up;
//! - `faults`: a new set of faults (the command line's names and syntax, validated by the same
//!   parser), or none; it applies from the next connection accepted, whose number the reply
//!   gives, and every child keeps the set it was forked with;
//! - `down` shuts the listening sockets down so that connecting is refused, and `up` listens on
//!   them again (the same sockets, so the same port, even after `--port 0`: `setup` binds that
//!   port explicitly); `blackhole` keeps them listening but stops accepting, so connections wait in
//!   the backlog and then hang;
//! - `close` and `reset` end the live connections (optionally only those from one address
//!   group, `"from": "CIDR"`): SIGTERM, the child's clean close, or SIGUSR2, its reset.
//!
//! Written and read by the parent alone; a child closes the control socket and its connections
//! (they are among the listeners' descriptors).

use std::time::Instant;

use nix::sys::signal::Signal;
use serde_json::{Map, Value, json};

use super::control_socket::{Gate, IDLE, accept, read_lines, refusal, reply_to};
use super::fault_set::FaultSet;
use super::handlers;
use super::state::Parent;
use crate::cli::values::parse_network;
use crate::faults::Faults;
use crate::log::logln;
use crate::log::{Quoted, Word};
use crate::network::in_network;
use crate::peer::{Cred, Peer};
use forkecho_control::{FaultChange, Request};

impl Parent {
    /// Serves the control socket: accepts (`accept_ready`), reads the connections the poll found
    /// ready (bit i: connection i), answers every whole line, and closes idle ones. Cold and
    /// never inlined: its JSON would otherwise swell the loop's stack frame (5.5 KiB against
    /// 2.7), and the parent copies the stack pages it touches after every fork (a second
    /// copy-on-write fault per connection, 4 % more CPU per connection, measured in issue 22).
    #[cold]
    #[inline(never)]
    pub(super) fn serve_control(&mut self, accept_ready: bool, ready: u64) {
        let Some(control) = &mut self.control else {
            return;
        };
        let now = Instant::now();
        control.clients.retain(|c| now < c.last + IDLE);
        let mut requests = Vec::new();
        for (i, client) in control.clients.iter_mut().enumerate() {
            if ready & (1 << i) != 0 {
                read_lines(client, &mut requests, i);
            }
        }
        // Answered in order; a connection whose reply cannot go is closed after.
        for (i, line) in requests {
            let reply = match line {
                Ok(line) => {
                    let cred = self.control.as_ref().expect("serving control").clients[i].cred;
                    self.command(&line, cred)
                }
                Err(error) => refusal(&error),
            };
            let client = &mut self.control.as_mut().expect("serving control").clients[i];
            if !reply_to(&client.socket, &reply) {
                client.closing = true;
            }
        }
        let control = self.control.as_mut().expect("serving control");
        control.clients.retain(|c| !c.closing);
        if accept_ready {
            accept(control);
        }
    }

    /// Runs one request line from `cred`; the reply.
    fn command(&mut self, line: &[u8], cred: Cred) -> Value {
        let request: Value = match serde_json::from_slice(line) {
            Ok(Value::Object(map)) => Value::Object(map),
            Ok(_) => return refusal("a request is one JSON object"),
            Err(err) => return refusal(&format!("not JSON: {err}")),
        };
        let parsed = Request::from_json(&request);
        // The name as it came, for the log line, even when the request is refused.
        let Some(cmd) = request.get("cmd").and_then(Value::as_str) else {
            return refusal(&parsed.unwrap_err());
        };
        let from = format!("uid:{}", cred.uid);
        // Every command but `status` is logged.
        let logged = !matches!(parsed, Ok(Request::Status));
        let reply = parsed.and_then(|request| match request {
            Request::Status => Ok(self.status()),
            Request::Faults(change) => self.set_faults(change),
            Request::Down => self.gate(Gate::Down),
            Request::Up => self.gate(Gate::Up),
            Request::Blackhole => self.gate(Gate::Blackhole),
            Request::Close { from } => self.end_connections(from, Signal::SIGTERM),
            Request::Reset { from } => self.end_connections(from, Signal::SIGUSR2),
        });
        match reply {
            Ok(mut reply) => {
                if logged {
                    logln!("control cmd={} from={from}{}", Word(cmd), Detail(&reply));
                }
                reply["ok"] = true.into();
                reply
            }
            Err(error) => {
                logln!(
                    "control cmd={} from={from} refused error={}",
                    Word(cmd),
                    Quoted(&error)
                );
                refusal(&error)
            }
        }
    }

    fn status(&self) -> Value {
        let mut status = Map::new();
        status.insert("state".into(), self.state.gate.name().into());
        // The `stats` line's fields, as numbers where they are.
        for field in self.snapshot().to_string().split(' ') {
            if let Some((key, value)) = field.split_once('=') {
                let value = match value.strip_suffix('s').unwrap_or(value).parse::<f64>() {
                    Ok(n) if n.fract() == 0.0 && !value.ends_with('s') => json!(n as u64),
                    Ok(n) => json!(n),
                    Err(_) => json!(value),
                };
                status.insert(key.into(), value);
            }
        }
        let listeners: Vec<String> = self.addrs().map(ToString::to_string).collect();
        status.insert("listeners".into(), listeners.into());
        self.fault_fields(&mut status);
        Value::Object(status)
    }

    fn fault_fields(&self, into: &mut Map<String, Value>) {
        let faults = self.template.settings.faults.map(|f| f.to_string());
        into.insert("faults".into(), faults.into());
        into.insert("from_connection".into(), self.state.faults_from.into());
    }

    /// `faults`: a new set (read as the command line reads its fault options), or none.
    fn set_faults(&mut self, change: FaultChange) -> Result<Value, String> {
        let faults = match change {
            FaultChange::Set(flags) => Some(parse_faults(&flags)?),
            FaultChange::Clear => None,
        };
        // The new set becomes the fork template, and the one the last command made is freed:
        // children forked with it have their own copies (`fault_set`).
        let set = faults.map(FaultSet::new);
        self.template.settings.faults = set.as_ref().map(FaultSet::template);
        self.state.fault_set = set;
        self.state.faults_from = self.state.counts.accepted + 1;
        let mut reply = Map::new();
        self.fault_fields(&mut reply);
        Ok(Value::Object(reply))
    }

    /// `down`, `up`, `blackhole`.
    fn gate(&mut self, to: Gate) -> Result<Value, String> {
        let from = self.state.gate;
        if self.from_systemd && to == Gate::Down {
            return Err(concat!(
                "the listening sockets came from systemd, which forkecho cannot bind again: ",
                "down is refused (blackhole works)"
            )
            .into());
        }
        if to == Gate::Down && self.listeners.iter().any(|l| l.is_unix()) {
            return Err(concat!(
                "a Unix listener cannot be shut and opened again under the sandbox: down is ",
                "refused (blackhole works)"
            )
            .into());
        }
        if from == Gate::Down && to != Gate::Down {
            for listener in &self.listeners {
                listener.relisten(self.backlog).map_err(|err| {
                    format!("unable to listen on {} again: {err}", listener.addr())
                })?;
            }
        }
        if to == Gate::Down && from != Gate::Down {
            for listener in &self.listeners {
                listener
                    .stop_listening()
                    .map_err(|err| format!("unable to shut {}: {err}", listener.addr()))?;
            }
        }
        self.state.gate = to;
        Ok(json!({ "state": to.name() }))
    }

    /// `close` and `reset`: `signal` to every child serving a connection (from the group
    /// `"from"` names, if it does).
    fn end_connections(&mut self, from: Option<String>, signal: Signal) -> Result<Value, String> {
        let net = match from {
            None => None,
            Some(text) => Some(parse_network(&text).map_err(|why| format!("\"from\": {why}"))?),
        };
        let _blocked = handlers::block();
        self.collect_exits();
        let mut count = 0u64;
        for (pid, child) in self.state.children.iter() {
            let chosen = match (net, child.peer) {
                _ if child.role != super::children::Role::Client => false,
                (None, _) => true,
                (Some((ip, len)), Peer::Ip(addr)) => in_network(addr.ip(), ip, len),
                (Some(_), Peer::Unix(_)) => false,
            };
            if chosen && nix::sys::signal::kill(pid, signal).is_ok() {
                count += 1;
            }
        }
        Ok(json!({ "connections": count }))
    }
}

/// The log line's details of a reply: its fields as `key=value`.
struct Detail<'a>(&'a Value);

impl std::fmt::Display for Detail<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Value::Object(map) = self.0 else {
            return Ok(());
        };
        for (key, value) in map {
            match value {
                Value::String(text) => write!(f, " {key}={}", Quoted(text))?,
                Value::Null => write!(f, " {key}=none")?,
                other => write!(f, " {key}={other}")?,
            }
        }
        Ok(())
    }
}

/// The faults a `set` asks for, read as the command line reads them: each name a fault option's
/// without its dashes, each value what the option takes.
fn parse_faults(set: &[(String, String)]) -> Result<Faults, String> {
    match crate::cli::faults_from_flags(set)? {
        Some(faults) => Ok(faults),
        None => Err("no fault in \"set\" (\"clear\": true removes them)".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_read_as_the_command_line_reads_them() {
        let set = |v: Value| {
            let json = serde_json::json!({ "cmd": "faults", "set": v });
            match Request::from_json(&json).unwrap() {
                Request::Faults(FaultChange::Set(flags)) => parse_faults(&flags),
                other => panic!("{other:?}"),
            }
        };
        let faults = set(json!({"delay": "100:20", "reset-after": 500, "seed": 7})).unwrap();
        assert_eq!(faults.seed, 7);
        assert_eq!(
            faults.limit.map(|l| l.at),
            Some(crate::faults::Trigger::Bytes(500))
        );
        let err = set(json!({"delay": "soon"})).unwrap_err();
        assert!(err.contains("soon"), "{err}");
        let err = set(json!({"loss": 0.5})).unwrap_err();
        assert!(err.contains("\"loss\" is no fault"), "{err}");
        let err = set(json!({"close-after": 1, "reset-after": 2})).unwrap_err();
        assert!(err.contains("cannot be used with"), "{err}");
        assert!(set(json!({"seed": 3})).is_err());
    }
}

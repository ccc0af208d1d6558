//! What forkecho's server and its clients share. The control socket's requests, typed: what
//! `forkecho ctl` and `forkecho-fixture` send as one JSON object per line (`Request::to_json`),
//! and what the forkecho server reads from that line, once, before it applies it
//! (`Request::from_json`). The command names, and the shape of each request, exist here alone;
//! the server answers each with one JSON object, `"ok": true` and what the command reports, or
//! `"ok": false` and `"error"` (see CONTROL in `man forkecho`). And the one reading of a quoted
//! log value (`closing_quote`).
//!
//! ```
//! use forkecho_control::{FaultChange, Request};
//!
//! let delay = Request::Faults(FaultChange::Set(vec![("delay".into(), "100".into())]));
//! let line = delay.to_json().to_string();
//! assert_eq!(line, r#"{"cmd":"faults","set":{"delay":"100"}}"#);
//! assert_eq!(Request::from_json(&serde_json::from_str(&line).unwrap()), Ok(delay));
//! ```

use serde_json::{Map, Value, json};

/// One control request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The counts, the gate, the listeners and the faults in force.
    Status,
    /// New faults for the connections accepted from now on, or none.
    Faults(FaultChange),
    /// Shut the listeners: connecting is refused.
    Down,
    /// Listen again.
    Up,
    /// Listen, but accept nothing: connects hang once the backlog is full.
    Blackhole,
    /// Close every live connection (from one network, if `from` names one).
    Close { from: Option<String> },
    /// Reset every live connection (from one network, if `from` names one).
    Reset { from: Option<String> },
}

/// What a `faults` request changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultChange {
    /// Fault options by name without their dashes, each with its value as the command line
    /// takes it (`("delay", "100:20")`).
    Set(Vec<(String, String)>),
    /// No faults from now on.
    Clear,
}

/// Every command's name, as `cmd` carries it.
pub const NAMES: [&str; 7] = [
    "status",
    "faults",
    "down",
    "up",
    "blackhole",
    "close",
    "reset",
];

impl Request {
    /// The name `cmd` carries.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status => NAMES[0],
            Request::Faults(_) => NAMES[1],
            Request::Down => NAMES[2],
            Request::Up => NAMES[3],
            Request::Blackhole => NAMES[4],
            Request::Close { .. } => NAMES[5],
            Request::Reset { .. } => NAMES[6],
        }
    }

    /// The request as the JSON object sent on the wire.
    pub fn to_json(&self) -> Value {
        let cmd = self.name();
        match self {
            Request::Faults(FaultChange::Clear) => json!({ "cmd": cmd, "clear": true }),
            Request::Faults(FaultChange::Set(flags)) => {
                let set: Map<String, Value> = (flags.iter())
                    .map(|(name, value)| (name.clone(), value.clone().into()))
                    .collect();
                json!({ "cmd": cmd, "set": set })
            }
            Request::Close { from: Some(net) } | Request::Reset { from: Some(net) } => {
                json!({ "cmd": cmd, "from": net })
            }
            _ => json!({ "cmd": cmd }),
        }
    }

    /// The server's reading of one request object; an error is the refusal's text.
    pub fn from_json(request: &Value) -> Result<Request, String> {
        let Some(cmd) = request.get("cmd").and_then(Value::as_str) else {
            return Err(format!("no \"cmd\": one of {}", NAMES.join(", ")));
        };
        let from = || match request.get("from") {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err("\"from\" is an address or CIDR, as a string".to_string()),
        };
        Ok(match cmd {
            "status" => Request::Status,
            "faults" => Request::Faults(fault_change(request)?),
            "down" => Request::Down,
            "up" => Request::Up,
            "blackhole" => Request::Blackhole,
            "close" => Request::Close { from: from()? },
            "reset" => Request::Reset { from: from()? },
            other => {
                return Err(format!(
                    "unknown cmd \"{other}\": one of {}",
                    NAMES.join(", ")
                ));
            }
        })
    }
}

/// Where a quoted log value (`key="..."`, with `\"` and `\\` inside) that `text` starts inside
/// of ends: its first quote not escaped by a backslash. The one reading of forkecho's quoting in
/// text log lines, for the server's JSON renderer and forkecho-fixture's text reader.
pub fn closing_quote(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 2,
            b'"' => return Some(at),
            _ => at += 1,
        }
    }
    None
}

/// `{"set": {...}}` or `{"clear": true}`, each value a string or a number.
fn fault_change(request: &Value) -> Result<FaultChange, String> {
    match (request.get("set"), request.get("clear")) {
        (Some(Value::Object(set)), None) => {
            let mut flags = Vec::new();
            for (key, value) in set {
                let value = match value {
                    Value::String(text) => text.clone(),
                    Value::Number(n) => n.to_string(),
                    other => {
                        return Err(format!(
                            "\"{key}\": {other} is neither a string nor a number"
                        ));
                    }
                };
                flags.push((key.clone(), value));
            }
            Ok(FaultChange::Set(flags))
        }
        (None, Some(Value::Bool(true))) => Ok(FaultChange::Clear),
        _ => Err("faults takes \"set\": {...} or \"clear\": true".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_reads_back_as_itself() {
        let set = FaultChange::Set(vec![("delay".into(), "100:20".into())]);
        for request in [
            Request::Status,
            Request::Faults(set),
            Request::Faults(FaultChange::Clear),
            Request::Down,
            Request::Up,
            Request::Blackhole,
            Request::Close { from: None },
            Request::Reset {
                from: Some("10.0.0.0/8".into()),
            },
        ] {
            assert_eq!(Request::from_json(&request.to_json()), Ok(request));
        }
    }

    #[test]
    fn malformed_requests_are_refused_with_their_reason() {
        let refused = |v: Value| Request::from_json(&v).unwrap_err();
        assert!(refused(json!({})).starts_with("no \"cmd\""));
        assert!(refused(json!({"cmd": "explode"})).starts_with("unknown cmd \"explode\""));
        assert!(refused(json!({"cmd": "faults"})).contains("\"set\""));
        assert!(refused(json!({"cmd": "faults", "set": {"delay": []}})).contains("neither"));
        assert!(refused(json!({"cmd": "reset", "from": 7})).contains("as a string"));
    }
}

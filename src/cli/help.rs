//! The words `--help` and the man page group the options under, and `--tls-fault`'s kinds:
//! constants the option definitions (`options`, `faults`) and `setup::certificates` read.

/// The help section of the faults.
pub const FAULTS: &str = "Faults (misbehave on purpose, to test clients)";
/// The help section of what a harness (a test suite, a service manager) is told.
pub const HARNESS: &str = "Harness (readiness, lifelines, logs)";
/// The help section of TLS.
pub const TLS: &str = "TLS (encrypted echo, certificates made per run, broken on demand)";

/// The help section of WebSocket.
pub const WEBSOCKET: &str = "WebSocket (RFC 6455 echo, ws:// and wss://)";

/// The help section of the traffic dumps.
pub const DUMPS: &str = "Dumps (see what clients sent: pcapng files, TLS key logs)";

/// `--tls-fault`'s kinds: a certificate broken in one way, or a handshake that goes wrong.
pub const TLS_FAULTS: [&str; 7] = [
    "expired",
    "not-yet-valid",
    "wrong-name",
    "untrusted",
    "self-signed",
    "stall-handshake",
    "reset-in-handshake",
];

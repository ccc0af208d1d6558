//! The dump options (`--dump`, `--dump-limit`, `--tls-keylog`): their one definition, flattened
//! into `Options` (so `--help` and the man page list them under Dumps). Read at startup by
//! `crate::settings`; `setup::dump` opens what they name, and the children write there
//! (`child::dump`, `tls::KeyLog`).

use clap::Args;

use super::help::DUMPS;
use super::values::parse_bytes;

/// The most bytes one dump file holds by default: 16 MiB.
pub const DUMP_LIMIT: &str = "16M";

#[derive(Args, Debug, Clone)]
pub struct DumpOptions {
    /// Write each connection's traffic to a pcapng file in DIR, for Wireshark and tshark
    ///
    /// One file per connection, made by the child that serves it, named after the connection's
    /// number, its client and the time (conn-7_127.0.0.1-40112_20261206T101500.123Z.pcapng): a
    /// TCP conversation with the real addresses and ports, both directions, each read and write
    /// of the echo a segment of its own, stamped when it happened. With --tls, the plaintext;
    /// with --websocket, the HTTP upgrade and the frames. The UDP worker writes one file per
    /// run (udp-TIME-pidN.pcapng). Nothing of a client's bytes is written anywhere without it.
    /// A dump that cannot be written (a full disk) is lost, logged and counted; the echo goes
    /// on. DIR must be a writable directory at startup
    #[arg(long, value_name = "DIR", conflicts_with = "inetd", help_heading = DUMPS)]
    pub dump: Option<std::path::PathBuf>,

    /// The most bytes one dump file may hold (K, M and G suffixes); past it the dump is cut
    ///
    /// The file keeps what came before; the close line says `dump-end=cut`
    #[arg(
        long,
        value_name = "BYTES",
        default_value = DUMP_LIMIT,
        value_parser = parse_limit,
        requires = "dump",
        help_heading = DUMPS,
    )]
    pub dump_limit: u64,

    /// Append the TLS session secrets to FILE in the NSS key log format (SSLKEYLOGFILE)
    ///
    /// Each child appends its handshake's secrets, one write per line: with them, Wireshark
    /// decrypts a raw capture of the TLS traffic (tcpdump's, or any other). Whoever reads FILE
    /// can read every session it covers: keep it private (it is made with mode 0600) and off in
    /// production
    #[arg(long, value_name = "FILE", requires = "tls_on", help_heading = DUMPS)]
    pub tls_keylog: Option<std::path::PathBuf>,
}

/// A dump limit: at least 4 KiB (room for the file's header and a few packets).
fn parse_limit(text: &str) -> Result<u64, String> {
    match parse_bytes(text)? {
        bytes @ 4096.. => Ok(bytes),
        _ => Err("must be at least 4K".to_string()),
    }
}

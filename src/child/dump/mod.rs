//! `--dump DIR`: each connection's traffic in a pcapng file of its own, for Wireshark and tshark.
//!
//! The child that serves a connection writes its file, as it writes its close line: it creates
//! the file in DIR (exclusively, never following a link: the sandbox lets a child create new
//! files there and open nothing else), records each read and write of the echo as it happens
//! (`Dumped`, a stream that wraps the connection's: the plain socket, the plaintext of a TLS
//! session, the bytes under a WebSocket session) as a TCP segment (`packets`), and finishes it
//! once the connection is closed. The UDP worker writes one file per run (`Recorder::udp`).
//! Packets are gathered in memory and written 64 KiB at a time, without waiting where the file
//! system allows it (RWF_NOWAIT), else with plain writes into the page cache, as the log writes a
//! file. A write that fails (a full disk, a quota, a file over RLIMIT_FSIZE) costs the
//! dump, never the echo: the child stops writing, says so once, and counts it. A file reaching
//! `--dump-limit` is cut there, said and counted the same way.
//!
//! The files: `settings` (what startup fixed: DIR, the limit, the shared counts), `recorder`
//! (one file being written: its packets, its limit, its failures), `packets` (the headers made
//! up around the payload), `pcapng` (the file's blocks), `gather` (where they wait), `name`
//! (the file's name), `stream` (the connection's stream that records). `setup::dump` opens DIR
//! and maps the counts at startup; the children write them, the parent reads them for its
//! `stats` and `stopped` lines and a scrape child for the metrics.

pub mod gather;
pub mod name;
pub mod packets;
pub mod pcapng;
pub mod recorder;
pub mod settings;
pub mod stream;

//! One dump file being written (`Recorder`): made exclusively in DIR, its packets gathered in
//! memory and written 64 KiB at a time, cut at the limit, given up on a failed write. A TCP
//! connection's recorder keeps each side's sequence numbers (`Flow`) and records the
//! handshake, each read and write, and the ends; the UDP worker's records datagrams. Owned by
//! the child that writes it (`connection::serve`, `udp::dumped`).

use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcap_file::DataLink;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};

use crate::log::logln;
use crate::log::time::Stamp;

use super::packets;
use super::settings::{CREATE, Dump, DumpCounts};

/// How much is gathered before it is written.
const GATHER: usize = 64 * 1024;

/// How a dump ended, for the close line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Writing,
    /// At `--dump-limit`.
    Cut,
    /// A write failed.
    Failed,
}

/// One dump file being written.
pub struct Recorder {
    name: String,
    file: File,
    writer: PcapNgWriter<Vec<u8>>,
    /// Bytes written to the file and gathered so far.
    size: u64,
    limit: u64,
    state: State,
    counts: &'static DumpCounts,
    /// The packet being made (reused).
    packet: Vec<u8>,
    /// A TCP connection's ends and sequence numbers.
    flow: Option<Flow>,
}

/// A TCP conversation's ends and where each side's sequence numbers stand.
struct Flow {
    client: SocketAddr,
    server: SocketAddr,
    client_seq: u32,
    server_seq: u32,
    client_done: bool,
}

/// The sequence numbers each side starts from (what its SYN carries).
const CLIENT_START: u32 = 1_000_000;
const SERVER_START: u32 = 2_000_000;

impl Recorder {
    /// The dump of TCP connection `serial` between `client` and `server` (`peer`, as the log
    /// names the client, names the file): made, with the handshake recorded; None, said and
    /// counted, if the file cannot be made.
    pub fn tcp(
        dump: &Dump,
        serial: u32,
        peer: impl fmt::Display,
        (client, server): (SocketAddr, SocketAddr),
    ) -> Option<Recorder> {
        let (client, server) = packets::same_family(client, server);
        let name = format!(
            "conn-{serial}_{}_{}",
            FileWord(peer),
            compact(&Stamp::now())
        );
        let mut recorder = Recorder::create(dump, name)?;
        recorder.flow = Some(Flow {
            client,
            server,
            client_seq: CLIENT_START,
            server_seq: SERVER_START,
            client_done: false,
        });
        recorder.segment(true, packets::SYN, &[]);
        recorder.segment(false, packets::SYN | packets::ACK, &[]);
        recorder.segment(true, packets::ACK, &[]);
        Some(recorder)
    }

    /// The UDP worker's dump for this run.
    pub fn udp(dump: &Dump) -> Option<Recorder> {
        let name = format!("udp-{}-pid{}", compact(&Stamp::now()), std::process::id());
        Recorder::create(dump, name)
    }

    fn create(dump: &Dump, stem: String) -> Option<Recorder> {
        let mut name = format!("{stem}.pcapng");
        let mut tries = 1;
        let fd = loop {
            let made = nix::fcntl::openat(
                // SAFETY: DIR stays open for the process's life (setup::dump leaks it).
                unsafe { std::os::fd::BorrowedFd::borrow_raw(dump.dir) },
                name.as_str(),
                CREATE,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
            );
            match made {
                Ok(fd) => break fd,
                // The same name in the same millisecond (another run's connection): another.
                Err(nix::errno::Errno::EEXIST) if tries < 10 => {
                    tries += 1;
                    name = format!("{stem}-{tries}.pcapng");
                }
                Err(errno) => {
                    logln!("warning: dump {name} not made: {}", io::Error::from(errno));
                    dump.counts.failed.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
        };
        dump.counts.files.fetch_add(1, Ordering::Relaxed);
        let start = || -> pcap_file::PcapResult<PcapNgWriter<Vec<u8>>> {
            let mut writer = PcapNgWriter::new(Vec::with_capacity(GATHER * 2))?;
            // pcap-file writes time stamps in nanoseconds: the interface must say so.
            let mut raw = InterfaceDescriptionBlock::new(DataLink::RAW, 0);
            raw.options.push(InterfaceDescriptionOption::IfTsResol(9));
            raw.options
                .push(InterfaceDescriptionOption::IfName(Cow::Borrowed(
                    "forkecho",
                )));
            writer.write_pcapng_block(raw)?;
            Ok(writer)
        };
        Some(Recorder {
            file: File::from(fd),
            writer: start().expect("writing to memory cannot fail"),
            size: 0,
            limit: dump.limit,
            state: State::Writing,
            counts: dump.counts,
            packet: Vec::new(),
            flow: None,
            name,
        })
    }

    /// Bytes the client sent (read by the child).
    pub fn read(&mut self, data: &[u8]) {
        for piece in data.chunks(packets::MOST) {
            self.segment(true, packets::PSH | packets::ACK, piece);
        }
    }

    /// Bytes the child wrote to the client.
    pub fn wrote(&mut self, data: &[u8]) {
        for piece in data.chunks(packets::MOST) {
            self.segment(false, packets::PSH | packets::ACK, piece);
        }
    }

    /// The client's FIN (a read of 0) or reset (`reset`), once.
    pub fn client_ended(&mut self, reset: bool) {
        if self.flow.as_ref().is_none_or(|flow| flow.client_done) {
            return;
        }
        let flags = if reset {
            packets::RST
        } else {
            packets::FIN | packets::ACK
        };
        self.segment(true, flags, &[]);
        if let Some(flow) = &mut self.flow {
            flow.client_done = true;
        }
    }

    /// The server's end of the connection (a reset with `reset`), then everything written out.
    /// Returns how the dump ended.
    pub fn finish(mut self, reset: bool) -> (String, State) {
        if let Some(flow) = &self.flow {
            let client_done = flow.client_done;
            match reset {
                true => self.segment(false, packets::RST | packets::ACK, &[]),
                false => {
                    self.segment(false, packets::FIN | packets::ACK, &[]);
                    if client_done {
                        self.segment(true, packets::ACK, &[]);
                    }
                }
            }
        }
        self.flush();
        (std::mem::take(&mut self.name), self.state)
    }

    /// A datagram from `from` to `to` (the UDP worker's).
    pub fn datagram(&mut self, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        let mut packet = std::mem::take(&mut self.packet);
        packets::udp(&mut packet, packets::same_family(from, to), data);
        self.record(&packet);
        self.packet = packet;
    }

    /// One TCP segment, from the client or the server, advancing the sender's sequence number.
    fn segment(&mut self, from_client: bool, flags: u8, payload: &[u8]) {
        let Some(flow) = &mut self.flow else {
            return;
        };
        let (seq, ack) = match from_client {
            true => (flow.client_seq, flow.server_seq),
            false => (flow.server_seq, flow.client_seq),
        };
        let ends = match from_client {
            true => (flow.client, flow.server),
            false => (flow.server, flow.client),
        };
        let advance = payload.len() as u32 + u32::from(flags & (packets::SYN | packets::FIN) != 0);
        match from_client {
            true => flow.client_seq = flow.client_seq.wrapping_add(advance),
            false => flow.server_seq = flow.server_seq.wrapping_add(advance),
        }
        let mut packet = std::mem::take(&mut self.packet);
        packets::tcp(&mut packet, ends, (seq, ack, flags), payload);
        self.record(&packet);
        self.packet = packet;
    }

    /// Adds one packet, stamped now, unless the dump is over; writes when enough is gathered.
    fn record(&mut self, packet: &[u8]) {
        if self.state != State::Writing {
            return;
        }
        // The block: 32 bytes of framing and the packet padded to 4 bytes.
        let block = 32 + packet.len().next_multiple_of(4) as u64;
        if self.size + self.writer.get_ref().len() as u64 + block > self.limit {
            self.flush();
            if self.state == State::Writing {
                self.state = State::Cut;
                self.counts.cut.fetch_add(1, Ordering::Relaxed);
                logln!(
                    "warning: dump {} cut at --dump-limit {} bytes",
                    self.name,
                    self.limit
                );
            }
            return;
        }
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let epb = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: since,
            original_len: packet.len() as u32,
            data: Cow::Borrowed(packet),
            options: Vec::new(),
        };
        // Into memory: cannot fail.
        let _ = self.writer.write_pcapng_block(epb);
        if self.writer.get_ref().len() >= GATHER {
            self.flush();
        }
    }

    /// Writes what is gathered; a failure ends the dump (said once, counted).
    fn flush(&mut self) {
        let gathered = self.writer.get_mut();
        if gathered.is_empty() || self.state == State::Failed {
            gathered.clear();
            return;
        }
        let result = self.file.write_all(gathered);
        self.size += gathered.len() as u64;
        gathered.clear();
        if let Err(err) = result {
            self.state = State::Failed;
            self.counts.failed.fetch_add(1, Ordering::Relaxed);
            logln!("warning: dump {} lost, the echo goes on: {err}", self.name);
        }
    }
}

impl Drop for Recorder {
    /// A dump not finished (the UDP worker's, at its end) still gets what was gathered.
    fn drop(&mut self) {
        self.flush();
    }
}

/// The time in a file name: `20261206T101500.123Z` (no colons, to the millisecond).
fn compact(stamp: &Stamp) -> String {
    let text: String = stamp
        .as_str()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    // ...T101500.123456Z → ...T101500.123Z
    match text.len() {
        len @ 4.. => format!("{}Z", &text[..len - 4]),
        _ => text,
    }
}

/// A peer as a file name word: `127.0.0.1-40112`, `::1-40112`, `unix-uid1000-pid4242`.
struct FileWord<T>(T);

impl<T: fmt::Display> fmt::Display for FileWord<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string();
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) if !text.starts_with("unix:") => (host, Some(port)),
            _ => (text.as_str(), None),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host: String = host
            .chars()
            .map(|c| match c {
                '=' | ',' | '/' | ' ' => '-',
                ':' if host.starts_with("unix") => '-',
                c => c,
            })
            .collect();
        match port {
            Some(port) => write!(f, "{host}-{port}"),
            None => write!(f, "{}", host.replace("--", "-")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_read_as_the_peer() {
        let word = |p: &str| FileWord(p).to_string();
        assert_eq!(word("127.0.0.1:40112"), "127.0.0.1-40112");
        assert_eq!(word("[::1]:40112"), "::1-40112");
        assert_eq!(word("unix:uid=1000,pid=4242"), "unix-uid-1000-pid-4242");
        let stamp = Stamp::at(1_765_016_100, 123_456);
        assert!(
            compact(&stamp).ends_with("T101500.123Z"),
            "{}",
            compact(&stamp)
        );
    }
}

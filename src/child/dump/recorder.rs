//! One dump file being written (`Recorder`): made exclusively in DIR, its packets gathered in
//! memory and written 64 KiB at a time, cut at the limit, given up on a failed write. A TCP
//! connection's recorder keeps each side's sequence numbers (`Flow`) and records the
//! handshake, each read and write, and the ends; the UDP worker's records datagrams. Owned by
//! the child that writes it (`connection::serve`, `udp::dumped`).

use std::fmt;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use nix::errno::Errno;

use crate::log::logln;

use super::gather::Gather;
use super::name::Name;
use super::settings::{CREATE, Dump, DumpCounts};
use super::{packets, pcapng};

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
    name: Name,
    file: File,
    /// The blocks gathered, not yet written.
    gathered: Gather,
    /// Bytes written to the file and gathered so far.
    size: u64,
    limit: u64,
    state: State,
    counts: &'static DumpCounts,
    /// Whether to try RWF_NOWAIT (until the file system refuses it).
    nowait: bool,
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
        let mut recorder = Recorder::create(dump, Name::connection(serial, peer))?;
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
        Recorder::create(dump, Name::udp(std::process::id()))
    }

    fn create(dump: &Dump, stem: Name) -> Option<Recorder> {
        let Some(mut gathered) = Gather::new() else {
            logln!("warning: dump {stem} not made: no memory for it");
            dump.counts.failed.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let mut name = stem.file();
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
                Err(Errno::EEXIST) if tries < 10 => {
                    tries += 1;
                    name = stem.numbered(tries).file();
                }
                Err(errno) => {
                    logln!("warning: dump {name} not made: {}", io::Error::from(errno));
                    dump.counts.failed.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
        };
        dump.counts.files.fetch_add(1, Ordering::Relaxed);
        pcapng::section_header(&mut gathered);
        pcapng::interface(&mut gathered, "forkecho");
        Some(Recorder {
            file: File::from(fd),
            gathered,
            size: 0,
            limit: dump.limit,
            state: State::Writing,
            counts: dump.counts,
            nowait: true,
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
    pub fn finish(mut self, reset: bool) -> (Name, State) {
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
        // The connection is closed: what is left may wait for the disk.
        self.nowait = false;
        self.flush();
        (self.name, self.state)
    }

    /// A datagram from `from` to `to` (the UDP worker's).
    pub fn datagram(&mut self, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        let ends = packets::same_family(from, to);
        let len = packets::length(ends.0, packets::UDP_HEADER, data.len());
        self.record(len, |out| packets::udp(out, ends, data));
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
        let len = packets::length(ends.0, packets::TCP_HEADER, payload.len());
        self.record(len, |out| {
            packets::tcp(out, ends, (seq, ack, flags), payload)
        });
    }

    /// Adds one packet of `packet_len` bytes, which `packet` appends, stamped now, unless the
    /// dump is over; writes when enough is gathered.
    fn record(&mut self, packet_len: usize, packet: impl FnOnce(&mut Gather)) {
        if self.state != State::Writing {
            return;
        }
        let block = pcapng::packet_size(packet_len);
        if self.gathered.len() >= GATHER || self.gathered.room() < block {
            self.flush();
        }
        if self.state == State::Writing && self.gathered.room() < block {
            self.fail("the disk did not keep up");
            return;
        }
        if self.size + (self.gathered.len() + block) as u64 > self.limit {
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
        pcapng::packet(&mut self.gathered, now(), packet);
    }

    /// Writes what is gathered without waiting where the file system allows it (RWF_NOWAIT:
    /// XFS and btrfs; ext4 refuses it for buffered writes, and then plain writes go to the page
    /// cache, as the log's do). What a busy disk cannot take at once stays gathered until
    /// nothing more fits (`record`); a failed write loses the dump (said once, counted).
    fn flush(&mut self) {
        if self.state == State::Failed {
            self.gathered.clear();
            return;
        }
        let mut done = 0;
        let stopped = loop {
            let gathered = self.gathered.as_slice();
            if done == gathered.len() {
                break None;
            }
            match write(&self.file, &gathered[done..], self.nowait) {
                Ok(0) => break Some(Errno::ENOSPC),
                Ok(n) => done += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EOPNOTSUPP | Errno::EINVAL) if self.nowait => self.nowait = false,
                Err(errno) => break Some(errno),
            }
        };
        self.size += done as u64;
        self.gathered.consume(done);
        match stopped {
            // What is left waits for the next flush (`record` gives up once nothing fits).
            None | Some(Errno::EAGAIN) => {}
            Some(errno) => self.fail(&io::Error::from(errno).to_string()),
        }
    }

    /// Ends the dump for `why`: said once, counted.
    fn fail(&mut self, why: &str) {
        self.gathered.clear();
        self.state = State::Failed;
        self.counts.failed.fetch_add(1, Ordering::Relaxed);
        logln!("warning: dump {} lost, the echo goes on: {why}", self.name);
    }
}

/// The time now, in nanoseconds since the epoch.
fn now() -> u64 {
    u64::try_from(crate::clock::realtime().as_nanos()).unwrap_or(u64::MAX)
}

/// One write(2), or pwritev2(2) with RWF_NOWAIT (at the file's offset) when `nowait`.
fn write(file: &File, data: &[u8], nowait: bool) -> Result<usize, Errno> {
    let iov = nix::libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    let flags = if nowait { nix::libc::RWF_NOWAIT } else { 0 };
    // SAFETY: one iovec over `data`, which pwritev2 only reads; offset -1 is the file's own.
    let n = unsafe { nix::libc::pwritev2(file.as_raw_fd(), &iov, 1, -1, flags) };
    Errno::result(n).map(|n| n as usize)
}

impl Drop for Recorder {
    /// A dump not finished (the UDP worker's, at its end) still gets what was gathered.
    fn drop(&mut self) {
        self.nowait = false;
        self.flush();
    }
}

//! One answer out: where it goes (`Target`), sending it, and counting it in the shared
//! `UdpCounts`. Written by the UDP worker alone (`child::udp` and its `shaper`, which sends
//! what it held back); the parent reads the counts for its `stats` line.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use super::datagram::{self, Local};
use crate::shared::UdpCounts;

/// Where an answer goes: the socket, the client (as the socket names it), and the local
/// address to answer from (wildcard sockets).
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub fd: RawFd,
    pub to: SocketAddr,
    pub local: Option<Local>,
    /// The socket's own address (its port, and its IP unless `local` names one).
    pub bound: SocketAddr,
}

/// Sends one answer, counting it.
pub fn answer(target: &Target, data: &[u8], counts: &UdpCounts) {
    match datagram::send(target.fd, data, target.to, target.local.as_ref()) {
        Ok(()) => {
            let from = target.local.map(|local| local.answer_from);
            super::dumped::answered(from, target.bound, target.to, data);
            add(&counts.echoed, 1);
            add(&counts.bytes, data.len() as u64);
        }
        Err(_) => add(&counts.send_failed, 1),
    }
}

/// Adds to one of the shared counts. The worker is their only writer (a restarted worker starts
/// after the last one was reaped), so a plain load and store do, without a locked
/// read-modify-write per datagram; the parent only reads them.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

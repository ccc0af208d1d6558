//! `--dump` in the UDP worker: every datagram it receives and every answer it sends, in one
//! pcapng file per worker run (`child::dump::recorder::Recorder::udp`). Received datagrams are
//! recorded as they come, before any check (a dropped one is in the file too: the dump shows
//! what the client sent); answers as they leave. The worker is one process with one thread, so
//! the file is this process's alone; `ON` keeps the cost without `--dump` to one load per
//! datagram: nothing is worked out before it is read.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::child::dump::recorder::Recorder;
use crate::child::dump::settings::Dump;

static ON: AtomicBool = AtomicBool::new(false);
static RECORDER: Mutex<Option<Recorder>> = Mutex::new(None);

/// Starts the worker's dump, if `--dump` asks for one.
pub fn start(dump: Option<&Dump>) {
    if let Some(recorder) = dump.and_then(Recorder::udp) {
        *lock() = Some(recorder);
        ON.store(true, Ordering::Relaxed);
    }
}

/// A datagram from `from` to the worker's socket `bound` (to `to` on a wildcard socket).
pub fn received(from: SocketAddr, to: Option<IpAddr>, bound: SocketAddr, data: &[u8]) {
    if ON.load(Ordering::Relaxed) {
        let to = SocketAddr::new(to.unwrap_or(bound.ip()), bound.port());
        record(from, to, data);
    }
}

/// An answer sent to `to` from the worker's socket `bound` (from `from` on a wildcard socket).
pub fn answered(from: Option<IpAddr>, bound: SocketAddr, to: SocketAddr, data: &[u8]) {
    if ON.load(Ordering::Relaxed) {
        let from = SocketAddr::new(from.unwrap_or(bound.ip()), bound.port());
        record(from, to, data);
    }
}

fn record(from: SocketAddr, to: SocketAddr, data: &[u8]) {
    if let Some(recorder) = lock().as_mut() {
        recorder.datagram(from, to, data);
    }
}

/// Writes out what is gathered (at the worker's end).
pub fn finish() {
    if ON.swap(false, Ordering::Relaxed) {
        drop(lock().take());
    }
}

fn lock() -> std::sync::MutexGuard<'static, Option<Recorder>> {
    RECORDER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

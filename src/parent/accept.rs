//! Accepting: a batch of connections from a ready listener, each through the PROXY waiting room
//! (with `--proxy-protocol`) and admission, to `fork`.
//!
//! An accept error that concerns one connection is skipped; one that says the process or the
//! system is short of something (EMFILE, ENFILE, ENOBUFS, ENOMEM) pauses accepting for `BACKOFF`,
//! so the loop never spins on a listener that stays readable.

use std::io;
use std::time::Instant;

use nix::errno::Errno;
use socket2::Socket;

use super::handlers;
use super::state::{BACKOFF, Parent};
use crate::log::Suppressed;
use crate::log::logln;
use crate::peer::{Peer, Via};

/// Connections accepted per wake-up before the loop looks at signals and exits again.
const ACCEPT_BATCH: usize = 64;

impl Parent {
    /// Accepts up to a batch from listener `index`.
    pub(super) fn accept_batch(&mut self, index: usize) {
        for _ in 0..ACCEPT_BATCH {
            // A failed fork pauses accepting: the rest of the backlog waits for the pause to end
            // (processes may have freed up by then) instead of being accepted and closed at once.
            // A control `down` or `blackhole` served after the poll that found this listener
            // ready stops accepting too: a listener shut a moment ago answers accept(2) with
            // EINVAL, which is no failure.
            let state = &*self.state;
            if handlers::stop_requested().is_some()
                || state.admission.full(state.live())
                || state.paused_until.is_some()
                || state.gate != super::control_socket::Gate::Up
            {
                return;
            }
            match self.listeners[index].accept() {
                Ok((client, from)) => {
                    let state = &mut *self.state;
                    // PROXY headers come on IP listeners only (`setup` refuses them on Unix
                    // ones).
                    match (&mut state.proxy, from) {
                        (Some(room), Peer::Ip(from)) => {
                            if let Some(arrival) = room.arrive(client, from, &mut state.counts) {
                                self.admit(arrival.socket, arrival.peer, arrival.via);
                            }
                        }
                        _ => self.admit(client, from, Via::Direct),
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if is_per_connection(&err) => {}
                Err(err) => return self.accept_failed(&err),
            }
        }
    }

    /// Admits the waiting connections whose PROXY header the last poll completed (entry `first`
    /// + i of the poll set is waiting connection i).
    pub(super) fn admit_waiting(&mut self, first: usize) {
        if let Some(room) = &mut self.state.proxy {
            room.start_walk();
        }
        loop {
            let state = &mut *self.state;
            let Some(room) = &mut state.proxy else {
                return;
            };
            let Some(arrival) = room.next_arrival(&mut state.polled, first, &mut state.counts)
            else {
                return;
            };
            self.admit(arrival.socket, arrival.peer, arrival.via);
        }
    }

    /// Serves `client` unless admission drops it (then it is closed at once, before any fork).
    /// `peer` is the client (from the PROXY header, if there was one).
    fn admit(&mut self, client: Socket, peer: Peer, via: Via) {
        let state = &mut *self.state;
        if state
            .admission
            .drop_connection(peer, via, &state.children, &mut state.counts)
        {
            drop(client);
            return;
        }
        state.counts.accepted += 1;
        self.spawn(client, peer, via);
    }

    /// EMFILE, ENFILE, ENOBUFS, ENOMEM: the listener stays readable, so polling it again at once
    /// would spin. Pause (the connection waits in the backlog), count and warn.
    pub(super) fn accept_failed(&mut self, err: &io::Error) {
        let now = self.pause_accepting();
        self.state.counts.accept_failures += 1;
        if let Some(held) = self.state.accept_warnings.allow(now) {
            logln!(
                "warning: accept failed (accepts paused {}ms): {err}{}",
                BACKOFF.as_millis(),
                Suppressed(held)
            );
        }
    }

    /// Stops polling the listeners for `BACKOFF`; returns now.
    pub(super) fn pause_accepting(&mut self) -> Instant {
        let now = Instant::now();
        self.state.paused_until = Some(now + BACKOFF);
        now
    }
}

/// True for accept(2) errors that concern only the connection being accepted: skip it, go on.
/// The network errors are those accept(2) on Linux passes through (see its man page).
pub(super) fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error().map(Errno::from_raw),
        Some(
            Errno::ECONNABORTED
                | Errno::EINTR
                | Errno::EPROTO
                | Errno::EPERM
                | Errno::ENETDOWN
                | Errno::ENOPROTOOPT
                | Errno::EHOSTDOWN
                | Errno::ENONET
                | Errno::EHOSTUNREACH
                | Errno::EOPNOTSUPP
                | Errno::ENETUNREACH
                | Errno::ETIMEDOUT
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aborted_connections_are_per_connection_but_fd_exhaustion_is_not() {
        let aborted = io::Error::from_raw_os_error(Errno::ECONNABORTED as i32);
        let emfile = io::Error::from_raw_os_error(Errno::EMFILE as i32);
        assert!(is_per_connection(&aborted));
        assert!(!is_per_connection(&emfile));
    }
}

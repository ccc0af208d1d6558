//! The parent's poll set: the self-pipe, the listeners, and connections waiting for their PROXY
//! header, in one array that lives in memory children do not inherit.
//!
//! The loop fills it before every poll. On the heap (a `Vec` per iteration) that write would land
//! on a page the last fork made copy-on-write, costing the parent a page fault and a 4 KiB copy per
//! connection (~5 µs of parent CPU per connection, `perf stat` in round 2); on the stack its size
//! would be fixed. A `MADV_DONTFORK` mapping (see `memory`) is never write-protected by fork, so
//! filling it costs only the stores.

use std::os::fd::RawFd;
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::libc;
use nix::poll::PollTimeout;

use crate::memory;

pub struct PollSet {
    fds: NonNull<libc::pollfd>,
    capacity: usize,
    len: usize,
}

impl PollSet {
    /// Room for `capacity` descriptors (untouched until used).
    pub fn new(capacity: usize) -> nix::Result<PollSet> {
        let fds = memory::map_parent_only(capacity * size_of::<libc::pollfd>())?;
        Ok(PollSet {
            fds: fds.cast(),
            capacity,
            len: 0,
        })
    }

    fn all(&mut self) -> &mut [libc::pollfd] {
        // The mapping lives as long as the set and only the set refers to it.
        // SAFETY: `capacity` zero-initialised (valid) pollfds, borrowed through `self` alone.
        unsafe { std::slice::from_raw_parts_mut(self.fds.as_ptr(), self.capacity) }
    }

    /// Empties the set.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// How many entries the set has.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Adds `fd`, to be polled for input.
    pub fn push(&mut self, fd: RawFd) {
        let at = self.len;
        assert!(at < self.capacity, "poll set full");
        self.all()[at] = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        self.len += 1;
    }

    /// poll(2) on the set: the number of descriptors with events.
    pub fn poll(&mut self, timeout: PollTimeout) -> nix::Result<usize> {
        let len = self.len as libc::nfds_t;
        // SAFETY: the first `len` entries are initialised pollfds in memory the set owns.
        let ready = unsafe { libc::poll(self.fds.as_ptr(), len, i32::from(timeout)) };
        Errno::result(ready).map(|n| n as usize)
    }

    /// Whether entry `index` had anything (input, hang-up or error) at the last poll.
    pub fn ready(&mut self, index: usize) -> bool {
        index < self.len && self.all()[index].revents != 0
    }
}

impl Drop for PollSet {
    fn drop(&mut self) {
        let len = self.capacity * size_of::<libc::pollfd>();
        // SAFETY: the one mapping `new` made, referred to by nothing once the set goes.
        unsafe { memory::unmap(self.fds.cast(), len) };
    }
}

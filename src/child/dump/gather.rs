//! `Gather`: where a dump's blocks wait to be written, in fresh anonymous memory of the child's
//! own (no allocation: malloc in a forked child writes the heap's bookkeeping pages it shares
//! with the parent, a page fault and a copy each; here only the pages the blocks fill are
//! touched, one for most connections). Filled by `pcapng` and `packets`, emptied by `Recorder`.

use std::ops::{Index, IndexMut, Range};

use nix::sys::mman::MapFlags;

/// Room for what waits: a full gathering and the largest packet, four times over.
pub const CAPACITY: usize = 256 * 1024;

/// Bytes gathered, at most `CAPACITY`.
pub struct Gather {
    buf: &'static mut [u8],
    len: usize,
}

impl Gather {
    /// Fresh memory, or None when it cannot be mapped.
    pub fn new() -> Option<Gather> {
        let flags = MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE;
        let start = crate::memory::map(CAPACITY, flags).ok()?;
        // The mapping is never unmapped (the process ends with _exit, or it lives as long as the
        // process) and only this Gather refers to it.
        // SAFETY: CAPACITY readable, writable, zero-filled bytes.
        let buf = unsafe { std::slice::from_raw_parts_mut(start.as_ptr(), CAPACITY) };
        Some(Gather { buf, len: 0 })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// How much more fits.
    pub fn room(&self) -> usize {
        CAPACITY - self.len
    }

    /// Appends `data`; the caller has made sure it fits (`room`).
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.buf[self.len..self.len + data.len()].copy_from_slice(data);
        self.len += data.len();
    }

    /// Zeroes up to `len` (which is no shorter than what is there).
    pub fn pad_to(&mut self, len: usize) {
        self.buf[self.len..len].fill(0);
        self.len = len;
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Drops the first `n` bytes (written), keeping the rest.
    pub fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.len, 0);
        self.len -= n;
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl Index<Range<usize>> for Gather {
    type Output = [u8];

    fn index(&self, range: Range<usize>) -> &[u8] {
        &self.as_slice()[range]
    }
}

impl IndexMut<Range<usize>> for Gather {
    fn index_mut(&mut self, range: Range<usize>) -> &mut [u8] {
        &mut self.buf[..self.len][range]
    }
}

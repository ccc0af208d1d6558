//! Fresh anonymous memory straight from the kernel: zero-filled, page-aligned, never unmapped.
//!
//! Three things live outside the heap on purpose, each for what it does to children's memory:
//! the byte counter every child shares (MAP_SHARED), the fallback echo buffer (a child dirties
//! only the pages its reads fill), and the child table (MADV_DONTFORK: children do not inherit
//! it). Each is mapped once and lives until the process ends, so nothing here unmaps.

use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};

/// Maps `len` readable, writable, zero-filled bytes with `flags` (MAP_PRIVATE or MAP_SHARED,
/// plus any others). EINVAL for a length of zero.
pub fn map(len: usize, flags: MapFlags) -> nix::Result<NonNull<u8>> {
    let len = NonZeroUsize::new(len).ok_or(Errno::EINVAL)?;
    let prot = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
    // SAFETY: a fresh anonymous mapping with no address hint cannot alias or clobber anything.
    let mapping = unsafe { mmap_anonymous(None, len, prot, flags) }?;
    Ok(mapping.cast())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_are_zeroed_and_page_aligned() {
        let ptr = map(10_000, MapFlags::MAP_PRIVATE).unwrap();
        assert_eq!(ptr.as_ptr() as usize % 4096, 0);
        // SAFETY: the mapping is 10 000 readable bytes and nothing else refers to it.
        let bytes = unsafe { std::slice::from_raw_parts(ptr.as_ptr(), 10_000) };
        assert!(bytes.iter().all(|&b| b == 0));
        assert_eq!(map(0, MapFlags::MAP_PRIVATE), Err(Errno::EINVAL));
    }
}

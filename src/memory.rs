//! Fresh anonymous memory straight from the kernel: zero-filled, page-aligned, never unmapped.
//!
//! Some things live outside the heap on purpose, each for what it does to children's memory:
//! the byte counter every child shares (MAP_SHARED), the fallback echo buffer (a child dirties
//! only the pages its reads fill), and the parent's own state: the child table and the reaper's
//! ring (`map_parent_only`: children do not inherit them) and the rest of its bookkeeping
//! (`ForkShared`). Each is mapped once and lives until the process ends, so nothing here unmaps.
//!
//! Why: fork write-protects every private page of the parent, so the first write to a page after
//! each fork faults and copies the page while the child still shares it. The parent updates its
//! bookkeeping after every fork; in ordinary memory (its stack, the heap, statics) that cost two
//! or three page copies per connection on the parent's critical path, measured with perf as the
//! largest difference from the C baseline's parent. Neither MADV_DONTFORK nor MAP_SHARED memory
//! is write-protected by fork.

use std::num::NonZeroUsize;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::sys::mman::{MapFlags, MmapAdvise, ProtFlags, madvise, mmap_anonymous};

/// Maps `len` readable, writable, zero-filled bytes with `flags` (MAP_PRIVATE or MAP_SHARED,
/// plus any others). EINVAL for a length of zero.
pub fn map(len: usize, flags: MapFlags) -> nix::Result<NonNull<u8>> {
    let len = NonZeroUsize::new(len).ok_or(Errno::EINVAL)?;
    let prot = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
    // SAFETY: a fresh anonymous mapping with no address hint cannot alias or clobber anything.
    let mapping = unsafe { mmap_anonymous(None, len, prot, flags) }?;
    Ok(mapping.cast())
}

/// Maps `len` zero-filled private bytes that children do not inherit (MADV_DONTFORK): a child
/// has no mapping there at all, and a fork neither copies nor write-protects it.
pub fn map_parent_only(len: usize) -> nix::Result<NonNull<u8>> {
    let mapping = map(len, MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE)?;
    // SAFETY: the range is exactly the mapping just made; DONTFORK only affects children.
    unsafe { madvise(mapping.cast(), len, MmapAdvise::MADV_DONTFORK) }?;
    Ok(mapping)
}

/// A value in MAP_SHARED memory, which fork neither copies nor write-protects: the parent's
/// writes after a fork cost no page copies. A child sees the same pages, so it must only read
/// them; it can, which matters because the compiler may load a field the child uses (say a
/// copied-out setting) after the fork rather than before it.
pub struct ForkShared<T> {
    value: NonNull<T>,
}

impl<T> ForkShared<T> {
    pub fn new(value: T) -> nix::Result<ForkShared<T>> {
        assert!(align_of::<T>() <= 4096, "mappings are page-aligned");
        let ptr = map(size_of::<T>().max(1), MapFlags::MAP_SHARED)?.cast::<T>();
        // SAFETY: the mapping is fresh, large enough and aligned for T, and nothing else uses it.
        unsafe { ptr.as_ptr().write(value) };
        Ok(ForkShared { value: ptr })
    }
}

impl<T> Deref for ForkShared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: `new` wrote a T there, which lives until `drop`; borrows follow `self`'s.
        unsafe { self.value.as_ref() }
    }
}

impl<T> DerefMut for ForkShared<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this borrow unique.
        unsafe { self.value.as_mut() }
    }
}

impl<T> Drop for ForkShared<T> {
    fn drop(&mut self) {
        // The mapping itself stays, like every mapping here.
        // SAFETY: the T written by `new`, dropped once, never used again.
        unsafe { self.value.as_ptr().drop_in_place() };
    }
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

    #[test]
    fn a_fork_shared_value_is_usable_and_dropped() {
        let dropped = std::rc::Rc::new(());
        let mut value = ForkShared::new((41u64, std::rc::Rc::clone(&dropped))).unwrap();
        value.0 += 1;
        assert_eq!(value.0, 42);
        assert_eq!(std::rc::Rc::strong_count(&dropped), 2);
        drop(value);
        assert_eq!(std::rc::Rc::strong_count(&dropped), 1);
    }
}

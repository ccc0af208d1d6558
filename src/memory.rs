//! Memory and fork: where each thing forkecho keeps lives, so that forking stays cheap.
//!
//! This is the one place the copy-on-write story is told. fork(2) write-protects every private page
//! of the parent; the first write to such a page afterwards, by either process, faults and copies
//! it while the other still shares it. The parent writes its bookkeeping after every fork (the new
//! child's entry, counters), so in ordinary memory (its heap or statics) every connection would pay
//! two or three page copies on the parent's critical path, and each child would end up owning
//! copies of pages it never uses: the largest difference from the C baseline's parent in round 2's
//! `perf` profiles. Hence three kinds of memory:
//! - `ParentOnly`: the parent's mutable bookkeeping (the child table, the reaper's ring, the
//!   counters, `parent::LoopState`), and the stack its SIGCHLD handler runs on, in private
//!   mappings marked MADV_DONTFORK. A child has no mapping there at all, so fork neither copies
//!   nor write-protects them, and a child that strayed into them would fault instead of
//!   corrupting the parent's state. Nothing a child runs may read them: what a child needs is
//!   copied out and handed to `parent::fork` by value.
//! - `map(.., MAP_SHARED)`: the one page parent and children both write, the bytes-echoed
//!   counter (atomics only).
//! - `map(.., MAP_PRIVATE)`: a child's echo buffer, fresh from the kernel, so the child dirties
//!   only the pages its reads fill.
//!
//! What the parent fixes at startup and only reads afterwards (the listener, the child's settings)
//! stays in ordinary memory: pages nobody writes are shared by fork at no cost. Each mapping lives
//! until the process ends, except the child table's when it grows.
//!
//! Shared at no cost to write, but not free: fork copies the page table entry of every private
//! page the parent has, and each child's exit drops it again. What startup used and left behind
//! (the freed heap of option parsing, the stack its calls reached) would be copied on every fork
//! for nothing, so the loop gives it back first (`shed_startup`).

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

/// Gives the kernel back what startup used and left: the heap's free memory, and the stack below
/// this call's frame, which is dead: what later calls reach again comes back zero-filled, once.
/// The parent's private pages, whose entries every fork copies, go from 74 to 52 this way.
#[inline(never)]
pub fn shed_startup() {
    // SAFETY: malloc_trim only returns free memory of the heap to the kernel.
    unsafe { nix::libc::malloc_trim(0) };
    let here = 0u8;
    // A page of margin below this frame: the calls that follow (madvise's) stay above it.
    let dead_below = ((&raw const here) as usize & !(PAGE - 1)) - PAGE;
    let Some(bottom) = stack_bottom() else {
        return;
    };
    if let Some(len) = NonZeroUsize::new(dead_below.saturating_sub(bottom)) {
        let (start, dontneed) = (bottom as *mut _, nix::libc::MADV_DONTNEED);
        // MADV_DONTNEED leaves the pages mapped, zero-filled when touched again.
        // SAFETY: the pages lie in the stack mapping, below every live frame.
        let _ = unsafe { nix::libc::madvise(start, len.get(), dontneed) };
    }
}

/// Calls `f` with the stack pointer in the top eighth of a page, so that the frames `f` then
/// stacks below (the loop, and the calls down to fork) share as few pages as they can: one, where
/// they take less than 3.5 KiB. Every stack page the parent writes after a fork is a page it
/// copies while a child shares it, and where the loop's frames fall depends on where the kernel
/// put the stack: at random, within a page. Descends in steps smaller than that eighth (in a
/// release build) until there, and gives up after a page's worth or so of steps.
pub fn from_page_top<R>(f: impl FnOnce() -> R) -> R {
    descend(f, 64)
}

#[inline(never)]
fn descend<R>(f: impl FnOnce() -> R, steps_left: u32) -> R {
    let step = [0u8; 128];
    let at = std::hint::black_box(&step).as_ptr() as usize;
    match steps_left == 0 || at % PAGE >= PAGE - PAGE / 8 {
        true => f(),
        false => descend(f, steps_left - 1),
    }
}

/// The page size forkecho assumes for stacks (Linux's on every architecture it builds for but a
/// few with larger pages, where the margin is only smaller than meant).
const PAGE: usize = 4096;

/// The lowest address of the main thread's stack mapping as it stands, from /proc/self/maps.
fn stack_bottom() -> Option<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|line| line.ends_with("[stack]"))?;
    usize::from_str_radix(line.split('-').next()?, 16).ok()
}

/// Unmaps what `map` or `map_parent_only` mapped: for the child table, which grows.
///
/// # Safety
/// `start` and `len` are exactly one earlier mapping's, and nothing refers to it any more.
pub unsafe fn unmap(start: NonNull<u8>, len: usize) {
    // SAFETY: the caller's promise.
    let _ = unsafe { nix::sys::mman::munmap(start.cast(), len) };
}

/// Maps `len` zero-filled private bytes that children do not inherit (MADV_DONTFORK): a child
/// has no mapping there at all, and a fork neither copies nor write-protects it.
pub fn map_parent_only(len: usize) -> nix::Result<NonNull<u8>> {
    let mapping = map(len, MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE)?;
    // SAFETY: the range is exactly the mapping just made; DONTFORK only affects children.
    unsafe { madvise(mapping.cast(), len, MmapAdvise::MADV_DONTFORK) }?;
    Ok(mapping)
}

/// A value in a `map_parent_only` mapping: the parent's own, never copied or write-protected by
/// fork, and absent from every child.
pub struct ParentOnly<T> {
    value: NonNull<T>,
}

impl<T> ParentOnly<T> {
    pub fn new(value: T) -> nix::Result<ParentOnly<T>> {
        assert!(align_of::<T>() <= 4096, "mappings are page-aligned");
        let ptr = map_parent_only(size_of::<T>().max(1))?.cast::<T>();
        // SAFETY: the mapping is fresh, large enough and aligned for T, and nothing else uses it.
        unsafe { ptr.as_ptr().write(value) };
        Ok(ParentOnly { value: ptr })
    }
}

impl<T> Deref for ParentOnly<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: `new` wrote a T there, which lives until `drop`; borrows follow `self`'s.
        unsafe { self.value.as_ref() }
    }
}

impl<T> DerefMut for ParentOnly<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this borrow unique.
        unsafe { self.value.as_mut() }
    }
}

impl<T> Drop for ParentOnly<T> {
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
    fn from_page_top_runs_its_function_near_the_top_of_a_page() {
        let at = from_page_top(|| {
            let here = 0u8;
            std::hint::black_box(&here) as *const u8 as usize
        });
        // The closure's frame lies below the last step, within the same page or just below it.
        assert!(at % PAGE >= PAGE / 2, "{:#x}", at % PAGE);
        assert_eq!(from_page_top(|| 42), 42);
    }

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
    fn a_parent_only_value_is_usable_and_dropped() {
        let dropped = std::rc::Rc::new(());
        let mut value = ParentOnly::new((41u64, std::rc::Rc::clone(&dropped))).unwrap();
        value.0 += 1;
        assert_eq!(value.0, 42);
        assert_eq!(std::rc::Rc::strong_count(&dropped), 2);
        drop(value);
        assert_eq!(std::rc::Rc::strong_count(&dropped), 1);
    }
}

//! The fault set the control socket's `faults` command made last, owned by the parent so that
//! it is freed when the next command replaces it: a long soak driving faults through the
//! control socket keeps the parent's memory flat.
//!
//! Children refer to their fault set as `&'static Faults` (`child::Settings`): a child's copy of
//! the parent's memory, made at fork, holds it for the child's whole life whatever the parent
//! does with its own. In the parent, the one reference to a set made here is the template for
//! the next fork (`template.settings.faults`), which `parent::control` points at the new set in
//! the same call that drops the old one. The startup set (from the command line) is not one of
//! these: it lives as long as the process.

use std::ptr::NonNull;

use crate::faults::{Faults, Trigger};

/// A fault set on the heap, with its `--close-on`/`--reset-on` pattern (a leaked boxed slice,
/// as `cli::faults` makes it), both freed on drop.
pub struct FaultSet(NonNull<Faults>);

impl FaultSet {
    pub fn new(faults: Faults) -> FaultSet {
        FaultSet(NonNull::from(Box::leak(Box::new(faults))))
    }

    /// The set, as the fork template holds it. The caller drops the `FaultSet` only once that
    /// template no longer refers to it (see the module's notes).
    pub fn template(&self) -> &'static Faults {
        // Nothing in this process uses the reference after `drop` (see the module's notes).
        // SAFETY: the pointer came from Box::leak and stays valid until `drop`.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for FaultSet {
    fn drop(&mut self) {
        // SAFETY: from Box::leak in `new`, freed once, here; no reference to it is used after.
        let faults = unsafe { Box::from_raw(self.0.as_ptr()) };
        if let Some(limit) = faults.limit
            && let Trigger::Pattern(pattern) = limit.at
        {
            let pattern: *const [u8] = pattern;
            // `cli::faults` leaks every pattern as a boxed slice, and this set was its owner.
            // SAFETY: from Box::leak of a Box<[u8]>, freed once, here.
            let pattern = unsafe { Box::from_raw(pattern.cast_mut()) };
            drop(pattern);
        }
    }
}

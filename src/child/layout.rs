//! Where the data a connection's child writes lies, for the linker (`hot.order`, passed by
//! build.rs). Every page of the parent's data a child writes is copied for it: a page fault and 4
//! KiB of its own memory. The C library's fork writes a few variables in every child (the
//! dynamic loader's locks in `.data`; the fork generation, the thread attribute lock and the
//! stack lists in `.bss`), and where they fall followed the size of everything linked before
//! them: one build in twenty-five split the locks across two pages. So `hot.order` puts them first
//! in their sections, `.data` starts a page (`-z separate-loadable-segments`), and `.bss` opens
//! with `BSS_PAGE` below, a page-aligned page that nothing touches, so that what follows it starts
//! a page too: two pages a child writes, wherever the rest of the build puts things. Nothing
//! reads or writes `BSS_PAGE`; it only holds the place.

use std::sync::atomic::AtomicU8;

/// A page of `.bss`, aligned to a page: the first thing in `.bss` (`hot.order`), so that the C
/// library's variables listed after it start a page of their own. Never touched, so never in
/// memory.
#[repr(C, align(4096))]
struct Page(AtomicU8);

#[used]
#[unsafe(export_name = "forkecho_child_bss_page")]
static BSS_PAGE: Page = Page(AtomicU8::new(0));

//! The data every connection's child writes, as the binary lays it out (`src/child/layout.rs`):
//! what the C library's fork writes in every child, and the child's stop state, on one page of
//! `.data` and one of `.bss`, whatever else the build holds; and the code a child calls outside
//! its own section, in one window of the kernel's fault-around. Read from the binary's symbol
//! table, in a build that LLD laid out by `src/child/hot.order` (build.rs says which builds are).

use object::{Object, ObjectSection, ObjectSymbol};

use crate::util::binary;

const PAGE: u64 = 4096;

/// What every child writes in `.data`: its stop state, then the C library's (the dynamic
/// loader's locks, the thread count); and beside them, read, the prefix of a log line.
const DATA: [&str; 5] = [
    "forkecho_child_stop_socket",
    "forkecho_log_prefix",
    "_dl_load_lock",
    "_dl_load_tls_lock",
    "__nptl_nthreads",
];

/// What the C library's fork writes in `.bss`: the fork generation, the default thread
/// attributes' lock, the stack cache's lock and lists.
const BSS: [&str; 5] = [
    "__fork_generation",
    "__default_pthread_attr_lock",
    "_dl_stack_cache_lock",
    "_dl_stack_user",
    "_dl_stack_used",
];

/// The pages the named variables span. The first must be in the binary; the others are skipped
/// where this C library has no such variable (they differ between glibc versions).
fn pages(file: &object::File, names: &[&str]) -> Vec<u64> {
    let found = |name: &&str| file.symbols().find(|s| s.name() == Ok(name));
    assert!(
        found(&names[0]).is_some(),
        "no symbol {} in the binary",
        names[0]
    );
    let mut pages: Vec<u64> = (names.iter().filter_map(found))
        .flat_map(|symbol| {
            let (start, size) = (symbol.address(), symbol.size().max(1));
            [start / PAGE, (start + size - 1) / PAGE]
        })
        .collect();
    pages.sort_unstable();
    pages.dedup();
    pages
}

#[test]
fn what_every_child_writes_lies_on_one_page_of_data_and_one_of_bss() {
    let Some(bytes) = laid_out() else { return };
    let file = object::File::parse(&*bytes).expect("parse the binary");
    if stripped(&file) {
        return;
    }
    let groups = [(".data", &DATA[..]), (".bss", &BSS[..])];
    for (section, names) in groups {
        let spanned = pages(&file, names);
        assert_eq!(spanned.len(), 1, "{section}: pages {spanned:x?}");
    }
}

/// The built binary, or None (the test says it is skipped) where LLD did not lay it out by
/// `hot.order`.
fn laid_out() -> Option<Vec<u8>> {
    if option_env!("FORKECHO_CHILD_LAID_OUT").is_none() {
        eprintln!("skipped: this build was not laid out by hot.order (not LLD)");
        return None;
    }
    Some(std::fs::read(binary()).expect("read the binary"))
}

/// Whether the binary has no symbol table (the release build's is stripped): the tests that read
/// symbols are run on the debug build, laid out by the same file.
fn stripped(file: &object::File) -> bool {
    let none = file.symbols().next().is_none();
    if none {
        eprintln!("skipped: a stripped binary; the debug build's symbols are checked");
    }
    none
}

/// The kernel maps a file's pages in around a fault, up to 64 KiB aligned (`fault_around_bytes`).
const WINDOW: u64 = 64 << 10;

#[test]
fn the_code_a_child_calls_outside_its_section_lies_in_one_fault_around_window() {
    let Some(bytes) = laid_out() else { return };
    let file = object::File::parse(&*bytes).expect("parse the binary");
    if stripped(&file) {
        return;
    }
    let text = file
        .section_by_name(".text")
        .expect("a .text section")
        .index();
    let in_text = |symbol: &object::Symbol| symbol.section_index() == Some(text);
    // `core::fmt::write` is `_RNvNtCs<hash>_4core3fmt5write`, the hash changing with the toolchain.
    let named = |line: &str, symbol: &object::Symbol| match line.strip_prefix("core::") {
        None => symbol.name() == Ok(line),
        Some(path) => {
            let suffix: String = path
                .split("::")
                .map(|n| format!("{}{n}", n.len()))
                .collect();
            let name = symbol.name().unwrap_or("");
            name.starts_with("_RNv") && name.ends_with(&format!("_4core{suffix}"))
        }
    };
    let order = include_str!("../src/child/hot.order");
    let lines = order
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'));
    let found: Vec<(&str, u64, u64)> = lines
        .filter_map(|line| {
            let symbol = file.symbols().find(|s| in_text(s) && named(line, s))?;
            Some((line, symbol.address(), symbol.size()))
        })
        .collect();
    let start = found
        .iter()
        .map(|&(_, address, _)| address)
        .min()
        .unwrap_or(0);
    for needed in ["forkecho_child_libc_window", "_Fork", "core::fmt::write"] {
        assert!(
            found.iter().any(|&(line, ..)| line == needed),
            "{needed} not in .text"
        );
    }
    assert_eq!(start % WINDOW, 0, "the window starts at {start:#x}");
    for (line, address, size) in found {
        let end = address + size.max(1);
        assert!(
            end <= start + WINDOW,
            "{line} ends at {end:#x}, past {start:#x} + 64 KiB"
        );
    }
}

#[test]
fn the_child_s_own_code_and_the_stubs_it_calls_through_lie_in_one_fault_around_window() {
    let Some(bytes) = laid_out() else { return };
    let file = object::File::parse(&*bytes).expect("parse the binary");
    let hot = file
        .section_by_name(".text.hot")
        .expect("a .text.hot section");
    assert_eq!(hot.address() % WINDOW, 0, "{:#x}", hot.address());
    // The static C library calls memcpy and its kin through these stubs. An unoptimized build's
    // code is too large for one window; CI runs this test on the release build too.
    let stubs = file
        .section_by_name(".iplt")
        .filter(|_| !cfg!(debug_assertions));
    if let Some(stubs) = stubs {
        let end = stubs.address() + stubs.size();
        assert!(
            end <= hot.address() + WINDOW,
            ".iplt ends at {end:#x}, past {:#x} + 64 KiB",
            hot.address()
        );
    }
}

//! Test hooks for forkecho's own tests: races and failures that no client can bring about on
//! demand, made to happen at the one place they matter. (Not the faults clients are served on
//! purpose, `--delay` and the rest: those are `crate::faults`.)
//!
//! They exist only in debug builds (the binary `cargo test` drives) and are chosen when the
//! process starts, with `FORKECHO_DEBUG=name[,name...]` in its environment; nothing a client sends
//! can reach them. In a release build the variable is ignored and `armed` is a constant `false`,
//! so every hook compiles away.

/// A test hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `sigterm-while-waking`: the parent raises SIGTERM once, in the middle of taking a
    /// wake-up: after the self-pipe is drained and before the flags are read. That is where a
    /// stop signal arriving from outside can land; it must not be lost.
    SigtermWhileWaking,
    /// `child-panics`: every child panics right after its setup, before it echoes anything.
    ChildPanics,
    /// `forbidden-syscall`: the child of the first connection (and `--inetd`), once in its
    /// sandbox, makes a system call the sandbox forbids (socket(2)), and must die of SIGSYS.
    ForbiddenSyscall,
    /// `stop-before-wait`: a child raises SIGTERM once, the first time it is about to wait in
    /// poll (for input, or for room to write): after it looked for a stop and before the wait.
    /// That is where a stop signal from outside can land; it must not be missed.
    StopBeforeWait,
}

#[cfg(debug_assertions)]
mod armed {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::Hook;

    const NAMES: [(&str, Hook); 4] = [
        ("sigterm-while-waking", Hook::SigtermWhileWaking),
        ("child-panics", Hook::ChildPanics),
        ("forbidden-syscall", Hook::ForbiddenSyscall),
        ("stop-before-wait", Hook::StopBeforeWait),
    ];

    static ARMED: AtomicU32 = AtomicU32::new(0);

    fn bit(hook: Hook) -> u32 {
        1 << hook as u32
    }

    pub fn init() {
        let Some(value) = std::env::var_os("FORKECHO_DEBUG") else {
            return;
        };
        for name in value.to_string_lossy().split(',').filter(|n| !n.is_empty()) {
            match NAMES.iter().find(|(known, _)| *known == name) {
                Some(&(_, hook)) => {
                    ARMED.fetch_or(bit(hook), Ordering::Relaxed);
                }
                None => crate::log::logln!("warning: FORKECHO_DEBUG: unknown hook '{name}'"),
            }
        }
    }

    pub fn armed(hook: Hook) -> bool {
        ARMED.load(Ordering::Relaxed) & bit(hook) != 0
    }

    pub fn take(hook: Hook) -> bool {
        ARMED.fetch_and(!bit(hook), Ordering::Relaxed) & bit(hook) != 0
    }
}

#[cfg(not(debug_assertions))]
mod armed {
    use super::Hook;

    pub fn init() {}

    #[inline(always)]
    pub fn armed(_: Hook) -> bool {
        false
    }

    #[inline(always)]
    pub fn take(_: Hook) -> bool {
        false
    }
}

/// Reads `FORKECHO_DEBUG` (debug builds only). Call once, at startup.
pub fn init() {
    armed::init();
}

/// Whether `hook` was asked for.
pub fn armed(hook: Hook) -> bool {
    armed::armed(hook)
}

/// Whether `hook` was asked for, disarming it: for faults that should happen once.
pub fn take(hook: Hook) -> bool {
    armed::take(hook)
}

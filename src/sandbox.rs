//! The sandbox: once the server is set up, it and every child can serve and little else.
//!
//! Both sides use it: the parent compiles the filter and installs it on itself before it
//! announces itself (`parent::Parent::confine`); each child, or the `--inetd` process, confines
//! itself before its first read (`Confine::enter`, from `child/connection.rs`). Nothing here is
//! written after startup.
//!
//! The way sshd confines its pre-authentication child: `PR_SET_NO_NEW_PRIVS`, a seccomp
//! allow-list, and resource limits. The allow-list names the system calls forkecho makes once it
//! is listening, the parent's (accept, fork, wait, kill) and the children's (read, write, splice,
//! poll, socket options, memory, time, exit), and kills any process that makes another one with
//! SIGSYS (`SECCOMP_RET_KILL_PROCESS`): no exec, no open (but a new file in `--dump`'s DIR), no
//! socket or connect, no ptrace, no mount. A child that steps outside it dies alone, and the
//! parent logs `killed signal=SIGSYS` like any other death. Each child also lowers its own
//! limits: no processes (RLIMIT_NPROC 0, which binds unless the server runs as root) and no
//! descriptors beyond the two of a splice pipe (RLIMIT_NOFILE just above what it holds).
//!
//! Why one filter for all, installed once in the parent before it announces itself, and not one
//! per child: attaching a filter costs the kernel a JIT compilation and an executable mapping,
//! torn down again at exit, some 90 µs per process (`perf stat` over the server tree, 3 000
//! connections, round 2: a third of what a whole connection cost); an inherited filter costs a
//! fork nothing. `--inetd` serves one
//! connection per process and installs the filter itself. The filter is compiled by
//! `seccompiler` (rust-vmm's, which Firecracker's jailer uses). `--no-sandbox` turns it all off.
//! seccompiler builds filters for x86_64, aarch64 and riscv64; built for another architecture,
//! forkecho says so at startup and serves without a sandbox.

use std::io;
use std::os::fd::RawFd;

use nix::sys::resource::{Resource, setrlimit};

/// The compiled allow-list, fixed at startup.
#[derive(Debug)]
pub struct Sandbox {
    program: filter::Program,
}

impl Sandbox {
    /// Compiles the allow-list for this machine's architecture. With `directory` (the
    /// `--port-file`'s), renaming and unlinking in that one directory is allowed too: the parent
    /// puts the port file in place and removes it at a clean stop; and unlinking in `socket_dirs`
    /// (those of the Unix listeners' files, removed at a clean stop). A child closes those
    /// descriptors, and can open no other.
    /// With `control` (`--control`), listen(2) too: the control socket's `up` listens again on
    /// the sockets `down` shut.
    /// With `dump_dir` (`--dump`'s), creating new files there: see `filter::compile`.
    pub fn new(
        directory: Option<RawFd>,
        socket_dirs: &[RawFd],
        control: bool,
        dump_dir: Option<RawFd>,
    ) -> Result<Sandbox, String> {
        Ok(Sandbox {
            program: filter::compile(directory, socket_dirs, control, dump_dir)?,
        })
    }

    /// Installs the allow-list on the calling process and, through fork, on every process it
    /// makes from now on. Sets `PR_SET_NO_NEW_PRIVS` first (seccomp requires it).
    pub fn install(&self) -> io::Result<()> {
        filter::install(&self.program)
    }
}

/// What a process does about the sandbox when its connection starts.
#[derive(Debug, Clone, Copy)]
pub enum Confine {
    /// A forked child: the allow-list came with the fork; lower the limits.
    Inherited,
    /// `--inetd`: install the allow-list, then lower the limits.
    Install(&'static Sandbox),
}

impl Confine {
    /// Confines the calling process before its first read: the allow-list if it has none yet,
    /// then no processes and descriptors only below `highest` + 3 (room for a splice pipe).
    #[unsafe(link_section = ".text.hot.child")]
    pub fn enter(self, highest: RawFd) -> io::Result<()> {
        if let Confine::Install(sandbox) = self {
            sandbox.install()?;
        }
        limit(Resource::RLIMIT_NPROC, 0)?;
        limit(Resource::RLIMIT_NOFILE, highest.max(2) as u64 + 3)
    }
}

/// The sandbox for a run: None when it is off (`--no-sandbox`), or where no filter is built
/// (said at startup). An error says why there can be none and names the way out.
pub fn prepare(
    on: bool,
    directory: Option<RawFd>,
    socket_dirs: &[RawFd],
    control: bool,
    dump_dir: Option<RawFd>,
) -> Result<Option<&'static Sandbox>, String> {
    if !on {
        return Ok(None);
    }
    if !filter::AVAILABLE {
        crate::log::logln!(
            concat!(
                "warning: no sandbox on {}: seccompiler builds filters for x86_64, aarch64 and ",
                "riscv64 only"
            ),
            std::env::consts::ARCH
        );
        return Ok(None);
    }
    match Sandbox::new(directory, socket_dirs, control, dump_dir) {
        Ok(sandbox) => Ok(Some(Box::leak(Box::new(sandbox)))),
        Err(err) => Err(format!("{err}; --no-sandbox serves without the sandbox")),
    }
}

/// Sets both the soft and the hard limit: a confined process cannot raise it again.
#[unsafe(link_section = ".text.hot.child")]
fn limit(resource: Resource, value: u64) -> io::Result<()> {
    Ok(setrlimit(resource, value, value)?)
}

#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]
mod filter {
    use std::collections::BTreeMap;
    use std::io;

    use nix::libc;
    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };

    pub const AVAILABLE: bool = true;

    pub type Program = BpfProgram;

    /// The system calls a child makes after setting itself up, for any argument.
    const ALLOWED: &[libc::c_long] = &[
        // The echo, both paths, and the log.
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_readv,
        libc::SYS_writev,
        // The log, on a pipe that could not be reopened non-blocking (RWF_NOWAIT).
        libc::SYS_pwritev2,
        libc::SYS_recvfrom,
        libc::SYS_sendto,
        // The UDP worker: datagrams with their packet info.
        libc::SYS_recvmsg,
        libc::SYS_sendmsg,
        libc::SYS_splice,
        libc::SYS_pipe2,
        libc::SYS_ppoll,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_poll,
        libc::SYS_close,
        libc::SYS_shutdown,
        libc::SYS_setsockopt,
        libc::SYS_getsockopt,
        // Memory: the echo buffer and the allocator.
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_madvise,
        libc::SYS_brk,
        // Time: timeouts, --max-duration's timer, the faults' pauses.
        libc::SYS_clock_gettime,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_setitimer,
        // --tls: the handshake's randomness (ring reads it from the kernel, never from a file).
        libc::SYS_getrandom,
        // Signals: the stop handler's return, and a panic's abort.
        libc::SYS_rt_sigreturn,
        // A wait with a timeout that SIGSTOP and SIGCONT interrupted (Ctrl-Z and fg, a debugger)
        // is resumed by the kernel through restart_syscall: without it, stopping the server
        // killed it.
        libc::SYS_restart_syscall,
        libc::SYS_rt_sigprocmask,
        libc::SYS_getpid,
        libc::SYS_gettid,
        libc::SYS_tgkill,
        libc::SYS_futex,
        // Leaving: Rust's runtime takes down its signal stack when `main` returns (--inetd).
        libc::SYS_sigaltstack,
        libc::SYS_exit,
        libc::SYS_exit_group,
        // The parent: accept, fork (glibc's fork is clone; the child resets its robust list), the
        // signal mask around it, reaping, ending children, its stdout handed to /dev/null.
        libc::SYS_accept4,
        libc::SYS_clone,
        libc::SYS_set_robust_list,
        libc::SYS_wait4,
        libc::SYS_waitid,
        libc::SYS_kill,
        libc::SYS_getppid,
        libc::SYS_rt_sigaction,
        libc::SYS_dup3,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_dup2,
        libc::SYS_getsockname,
        libc::SYS_getpeername,
    ];

    /// Compiles the allow-list for this machine's architecture.
    // The libc constants' types differ between architectures: the casts are no-ops only here.
    /// Long on purpose: the allow-list is one table, read top to bottom.
    #[allow(clippy::unnecessary_cast)]
    pub fn compile(
        directory: Option<std::os::fd::RawFd>,
        socket_dirs: &[std::os::fd::RawFd],
        control: bool,
        dump_dir: Option<std::os::fd::RawFd>,
    ) -> Result<Program, String> {
        let arch = TargetArch::try_from(std::env::consts::ARCH)
            .map_err(|_| format!("no seccomp filter for {}", std::env::consts::ARCH))?;
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED
            .iter()
            .map(|&syscall| (syscall as i64, Vec::new()))
            .collect();
        if control {
            rules.insert(libc::SYS_listen as i64, Vec::new());
        }
        let arg = |index, value: u64| {
            SeccompCondition::new(index, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
        };
        let any_of =
            |index, values: &[u64]| -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
                values
                    .iter()
                    .map(|&value| SeccompRule::new(vec![arg(index, value)?]))
                    .collect()
            };
        let mut build = || -> Result<(), seccompiler::BackendError> {
            // ioctl: how much the client has not acknowledged (--reset-after), bytes waiting,
            // and non-blocking mode.
            rules.insert(
                libc::SYS_ioctl,
                any_of(
                    1,
                    &[
                        libc::TIOCOUTQ as u64,
                        libc::FIONREAD as u64,
                        libc::FIONBIO as u64,
                    ],
                )?,
            );
            // fcntl: file status flags, and the size of the splice pipe.
            rules.insert(
                libc::SYS_fcntl,
                any_of(
                    1,
                    &[
                        libc::F_GETFL as u64,
                        libc::F_SETFL as u64,
                        libc::F_GETFD as u64,
                        libc::F_SETPIPE_SZ as u64,
                        libc::F_GETPIPE_SZ as u64,
                    ],
                )?,
            );
            // mmap and mprotect, but never executable memory.
            let not_exec = || {
                SeccompRule::new(vec![SeccompCondition::new(
                    2,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64),
                    0,
                )?])
            };
            rules.insert(libc::SYS_mmap, vec![not_exec()?]);
            rules.insert(libc::SYS_mprotect, vec![not_exec()?]);
            // prlimit64: a child lowers its own limits (setrlimit), nobody else's.
            rules.insert(libc::SYS_prlimit64, any_of(0, &[0])?);
            // Renaming in the port file's directory, unlinking there and in the socket files'
            // directories, and nowhere else.
            if let Some(directory) = directory {
                let here = || any_of(0, &[directory as u64]);
                #[cfg(target_arch = "x86_64")]
                rules.insert(libc::SYS_renameat, here()?);
                rules.insert(libc::SYS_renameat2, here()?);
            }
            let unlink_in: Vec<u64> = directory
                .iter()
                .chain(socket_dirs)
                .map(|&fd| fd as u64)
                .collect();
            if !unlink_in.is_empty() {
                rules.insert(libc::SYS_unlinkat, any_of(0, &unlink_in)?);
                // fstatat there: a socket file is removed only if it is still the one bound.
                #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
                rules.insert(libc::SYS_newfstatat, any_of(0, &unlink_in)?);
                rules.insert(libc::SYS_statx, any_of(0, &unlink_in)?);
            }
            // --dump: openat in DIR only, and only to make a new file, write-only, never through
            // a link (`child::dump::settings::CREATE`): no file can be opened, read or truncated.
            if let Some(dir) = dump_dir {
                let kinds = libc::O_ACCMODE
                    | libc::O_CREAT
                    | libc::O_EXCL
                    | libc::O_NOFOLLOW
                    | libc::O_TRUNC
                    | libc::O_APPEND
                    | libc::O_PATH
                    | libc::O_TMPFILE;
                let create = crate::child::dump::settings::CREATE.bits() & kinds;
                let flags = SeccompCondition::new(
                    2,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::MaskedEq(kinds as u64),
                    create as u64,
                )?;
                let rule = SeccompRule::new(vec![arg(0, dir as u64)?, flags])?;
                rules.insert(libc::SYS_openat, vec![rule]);
            }
            // prctl: a child asks for SIGTERM when its parent dies; nothing else.
            rules.insert(
                libc::SYS_prctl,
                any_of(0, &[libc::PR_SET_PDEATHSIG as u64])?,
            );
            Ok(())
        };
        build().map_err(|err| format!("unable to build the seccomp filter: {err}"))?;
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::KillProcess,
            SeccompAction::Allow,
            arch,
        )
        .map_err(|err| format!("unable to build the seccomp filter: {err}"))?;
        let program = BpfProgram::try_from(filter)
            .map_err(|err| format!("unable to compile the seccomp filter: {err}"))?;
        Ok(program)
    }

    pub fn install(program: &Program) -> io::Result<()> {
        seccompiler::apply_filter(program).map_err(io::Error::other)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_allow_list_compiles_for_this_machine() {
            let program = compile(None, &[], false, None).expect("a filter for this architecture");
            assert!(program.len() > ALLOWED.len());
        }
    }
}

#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
mod filter {
    use std::io;

    pub const AVAILABLE: bool = false;

    /// No filter is ever built here: `prepare` does not ask for one.
    #[derive(Debug)]
    pub enum Program {}

    pub fn compile(
        _: Option<std::os::fd::RawFd>,
        _: &[std::os::fd::RawFd],
        _: bool,
        _: Option<std::os::fd::RawFd>,
    ) -> Result<Program, String> {
        Err(format!("no seccomp filter for {}", std::env::consts::ARCH))
    }

    pub fn install(program: &Program) -> io::Result<()> {
        match *program {}
    }
}

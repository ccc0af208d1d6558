//! The child half: everything that runs on the child's side of `parent::fork`.
//!
//! `run` is where a forked child starts. It first undoes what it inherited and does not need, in
//! one function, `after_fork` (PostgreSQL's `ClosePostmasterPorts`, djb's `/* ---- child */`
//! half): the parent's signal handlers give way to the child's own (`stop`), the kernel is asked
//! to send SIGTERM if the parent dies, the signal mask the parent held across fork is lifted, and
//! the listeners, the self-pipe and the parent's oom_score_adj file are closed (stdin and stdout
//! are /dev/null already: the parent pointed its own there once it announced itself). Then it
//! serves its one connection (`connection`: confine it, echo it through `echo` or `websocket`,
//! close it, log its close line) and leaves with `_exit`, never returning into the parent's
//! code: `exit` would run the parent's atexit handlers and flush stdio buffers the child only
//! holds copies of, and unwinding would run the parent's destructors. A panic is caught here and
//! ends the child with status 101 (in a release build, which aborts on panic, with SIGABRT); the
//! parent logs that exit like any other.
//!
//! A child pays for every page it touches first: fork copies no page table entries for the code
//! (the binary's text), so each 64 KiB run of it a child enters is a page fault, and each page of
//! the parent's data or stack it writes is a fault and a copy: some 3 µs each on this machine,
//! where a system call costs 0.1 µs. So what a connection's child runs is laid out together: its
//! functions (from `fork_child` through the echo to the close) in the section `.text.hot.child`,
//! and the C library's functions it calls, and the data it writes (`stop`'s socket, and what the
//! C library's fork writes in every child: `layout`), in the order `hot.order` gives the linker
//! (build.rs). A child of `-q` faults 9 times and writes 5 pages of its own (20 KiB), as the C
//! floor's faults 8 times and writes 6; scattered, it was 16 faults (`benches/README.md`). Calls
//! through closures and trait shims would land outside the section, and some C functions on a
//! page of their own (sigprocmask goes through pthread_sigmask: `set_mask`), so the path avoids
//! them.
//!
//! A child gets everything it needs in one `Context`, by value: the `Settings` fixed at startup
//! (`crate::settings`), its connection number, and the memory it shares with the parent
//! (`crate::shared`). `--inetd` builds the same context for the one connection it serves. A child
//! forked for a metrics scrape (`metrics`), or the UDP worker (`udp`), undoes the same inheritance
//! and is confined the same way, then does its own `Job` instead.

pub mod connection;
mod context;
pub mod dump;
pub mod echo;
mod inband;
mod layout;
pub mod metrics;
mod stop;
pub mod tls_session;
pub mod udp;
pub mod websocket;

use std::os::fd::{AsRawFd, RawFd};

use nix::sys::signal::SigSet;
use nix::unistd::Pid;
use socket2::Socket;

use connection::Stream;
pub use context::{Context, Settings};

use crate::log::logln;
use crate::peer::{Peer, PeerVia, Via};
use crate::sandbox::Confine;
use crate::shared::{Shared, UdpCounts};
use crate::testhooks::{self, Hook};

/// The most control connections (`--control`) the parent keeps open at once, each of which a
/// child closes.
pub const CONTROL_FDS: usize = 4;

/// The exit status of a child that panicked (Rust's own status for a panicking `main`).
#[cfg(panic = "unwind")]
pub const PANICKED: i32 = 101;

/// What a child is forked for.
pub enum Job {
    /// Echo a client's connection: `peer`, and how it came.
    Echo {
        client: Socket,
        peer: Peer,
        via: Via,
        context: Context,
    },
    /// Answer a metrics scrape with the parent's `figures` and the children's `shared` counts.
    Metrics {
        client: Socket,
        figures: metrics::Figures,
        shared: &'static Shared,
        confine: Option<Confine>,
    },
    /// Serve every UDP datagram on `sockets` (the worker), counting in `counts`.
    Udp {
        sockets: &'static [udp::Bound],
        settings: udp::Serving,
        counts: &'static UdpCounts,
        confine: Option<Confine>,
    },
}

/// What a child inherits from the parent only to undo it.
#[derive(Debug, Clone, Copy)]
pub struct Inherited {
    /// The parent's descriptors: both ends of the self-pipe, the parent's oom_score_adj file,
    /// and the harness's (the port file's directory, the notify socket, the lifeline); -1 for
    /// each it has not.
    pub fds: [RawFd; 6],
    /// The listening sockets (and the directories of their socket files, and the metrics
    /// listener, and the control socket).
    pub listeners: &'static [RawFd],
    /// With `--control`: the control connections open at the fork (-1 for none).
    pub control: [RawFd; CONTROL_FDS],
    /// The UDP sockets, which only the UDP worker keeps.
    pub udp: &'static [udp::Bound],
    /// The signal mask from before the parent blocked its handled signals for the fork.
    pub mask: SigSet,
    /// The parent's pid, to notice a parent that died before the child asked to follow it.
    pub parent: Pid,
}

/// A forked child's whole life: set up, do its `job`, `_exit`.
#[unsafe(link_section = ".text.hot.child")]
pub fn run(job: Job, inherited: Inherited) -> ! {
    // Where a panic unwinds (the debug build the tests run), it is caught here. Where it aborts
    // (the release build), there is nothing to catch, and no closure to move the job into: that
    // move is a memcpy of a few hundred bytes, whose code is one more page the child would
    // fault in, with nothing else on it that the child runs.
    #[cfg(panic = "unwind")]
    let code =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || work(job, &inherited)))
            .unwrap_or(PANICKED);
    #[cfg(not(panic = "unwind"))]
    let code = work(job, &inherited);
    // _exit, not exit: no atexit handlers, no second flush of stdio buffers copied from the parent.
    // SAFETY: _exit ends the process at once; nothing of the child's needs to run after it.
    unsafe { nix::libc::_exit(code) }
}

/// Undoes the inheritance, then does the job; returns the exit status.
#[unsafe(link_section = ".text.hot.child")]
fn work(job: Job, inherited: &Inherited) -> i32 {
    let (fd, keep_udp, control) = match &job {
        Job::Echo {
            client, context, ..
        } => (client.as_raw_fd(), false, context.settings.control),
        Job::Metrics { client, .. } => (client.as_raw_fd(), false, false),
        Job::Udp { .. } => (-1, true, false),
    };
    if !after_fork(fd, inherited, keep_udp, control) {
        // The parent is gone: nobody is left to serve for.
        return 0;
    }
    match job {
        Job::Echo {
            client,
            peer,
            via,
            context,
        } => echo_client(client, peer, via, context),
        Job::Metrics {
            client,
            figures,
            shared,
            confine,
        } => match confined(confine, client.as_raw_fd(), "metrics scrape") {
            true => {
                metrics::answer(client.into(), figures, shared);
                0
            }
            false => 1,
        },
        Job::Udp {
            sockets,
            settings,
            counts,
            confine,
        } => {
            // Forked before the readiness line, the worker has the launcher's stdout: it must
            // not hold it open. stdin is /dev/null since setup.
            // SAFETY: dup2 onto fd 1 replaces it atomically; nothing holds fd 1 as an object.
            unsafe { nix::libc::dup2(0, 1) };
            // Before the sandbox: its descriptor limit counts the file.
            udp::dumped::start(settings.dump);
            let highest = sockets.iter().map(|s| s.fd).max().unwrap_or(2);
            match confined(confine, highest, "udp worker") {
                true => udp::run(sockets, settings, counts),
                false => 1,
            }
        }
    }
}

/// Serves a client's connection; returns the exit status.
#[unsafe(link_section = ".text.hot.child")]
fn echo_client(client: Socket, peer: Peer, via: Via, context: Context) -> i32 {
    if testhooks::armed(Hook::ChildPanics) {
        panic!("FORKECHO_DEBUG=child-panics");
    }
    // A Unix socket inherits no option from its listener: the idle timeout is set here.
    if let Peer::Unix(_) = peer
        && let Err(err) = crate::sockopt::connection_options(&client, context.settings.idle_timeout)
    {
        logln!("warning: connection from {peer} closed: unable to set its timeouts: {err}");
        connection::unserved(&context);
        return 1;
    }
    connection::serve(Stream::Socket(client.into()), PeerVia(peer, via), context)
}

/// Confines a scrape child or the UDP worker (`what`, whose descriptors go up to `highest`) as a
/// connection's child confines itself in `connection`; false, said, if it cannot be.
fn confined(confine: Option<Confine>, highest: RawFd, what: &str) -> bool {
    let Some(confine) = confine else {
        return true;
    };
    match confine.enter(highest.max(crate::log::fd())) {
        Ok(()) => true,
        Err(err) => {
            logln!("warning: {what}: unable to enter the sandbox: {err}");
            false
        }
    }
}

/// Undoes in the child what belongs to the parent, with the parent's signals still blocked:
/// `socket` is the connection the stop handler wakes (-1 for none); the UDP sockets are kept by
/// the UDP worker alone (`keep_udp`); `control`: see `stop::install`. Returns false if the
/// parent has already died (then no parent-death signal will come).
#[unsafe(link_section = ".text.hot.child")]
fn after_fork(socket: RawFd, inherited: &Inherited, keep_udp: bool, control: bool) -> bool {
    // Handlers first, mask second: a stop signal that arrived since the fork is pending, and must
    // find the child's handler, not the parent's.
    stop::install(socket, control);
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
    set_mask(&inherited.mask);
    let udp = if keep_udp { &[][..] } else { inherited.udp };
    let fds = inherited
        .fds
        .iter()
        .chain(inherited.listeners)
        .chain(&inherited.control);
    let fds = fds.copied().filter(|&fd| fd >= 0);
    for fd in fds.chain(udp.iter().map(|socket| socket.fd)) {
        // The fds belong to the parent's objects, which the child never uses: it never returns
        // into the parent's code.
        // SAFETY: nothing in the child refers to these fd numbers after this close.
        unsafe { nix::libc::close(fd) };
    }
    // If the parent died before prctl, no signal will come: we were reparented already.
    nix::unistd::getppid() == inherited.parent
}

/// The size of the kernel's signal set, the first bytes of the C library's `sigset_t`: one bit
/// for each of its 64 signals (128 on MIPS).
const KERNEL_SIGSET: usize = if cfg!(any(target_arch = "mips", target_arch = "mips64")) {
    16
} else {
    8
};

/// Sets the signal mask to `mask` with rt_sigprocmask(2) itself. The C library's sigprocmask goes
/// through pthread_sigmask, whose code lies on a page no other step of a child's path touches: one
/// more page fault in every child, the cost of a few dozen system calls (`benches/README.md`).
#[unsafe(link_section = ".text.hot.child")]
fn set_mask(mask: &SigSet) {
    let set: &nix::libc::sigset_t = mask.as_ref();
    // rt_sigprocmask fails only for an invalid `how` or size, both constants here. The kernel
    // reads the first KERNEL_SIGSET bytes of `set` (a sigset_t is larger) and writes nothing.
    // SAFETY: `set` is a live sigset_t, and no old set is asked for.
    unsafe {
        nix::libc::syscall(
            nix::libc::SYS_rt_sigprocmask,
            nix::libc::SIG_SETMASK,
            std::ptr::from_ref(set),
            std::ptr::null_mut::<nix::libc::sigset_t>(),
            KERNEL_SIGSET,
        )
    };
}

//! One connection, from its first byte to its close line: time it, confine it, echo it, close
//! it, log it.
//!
//! A forked child and `--inetd` both serve their connection here. A socket is echoed on the path
//! `echo` chooses, or, with `--websocket`, message by message (`websocket`), over TLS or not;
//! stdin and stdout that are not one socket (`--inetd` under a launcher that passes pipes) are
//! echoed with read/write. A stop signal or `--max-duration` ends the echo
//! before its next read (`stop`), and `close` then closes the socket the way the end calls for.
//! The connection is closed before its line is logged, so the client's FIN never waits for the
//! log.

use std::fmt::Display;
use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socket2::SockRef;

use super::context::Context;
use super::dump::name::Name;
use super::dump::recorder::{Recorder, State};
use super::dump::settings::Dump;
use super::dump::stream::Dumped;
use super::echo::shapeable::Shapeable;
use super::echo::stall::Conn;
use super::echo::{self, End};
use super::{inband, stop, tls_session, websocket};
use crate::clock::monotonic;
use crate::faults::Acted;
use crate::log::logln;
use crate::log::{Dec, Secs};
use crate::sandbox::Confine;
use crate::testhooks::{self, Hook};
use crate::tls::Tls;

/// What a connection arrives as.
pub enum Stream {
    /// A connected socket, with TCP_NODELAY, SO_OOBINLINE and the idle timeout (SO_RCVTIMEO)
    /// set on it already: a read that gets nothing for that long fails with EAGAIN, an idle
    /// client.
    Socket(TcpStream),
    /// Something to read from and something to write to (stdin and stdout pipes).
    Pipes(File, File),
}

/// Serves the connection and returns the exit status: 0 for connections that ended normally, 1
/// for I/O failures (the parent logs those exits too). `peer` is what the close line calls it.
///
/// Long on purpose: a connection's whole path in one function, laid out in `.text.hot.child`
/// (see `child`): a call into a helper out of that section is a page fault in every child.
#[unsafe(link_section = ".text.hot.child")]
pub fn serve(stream: Stream, peer: impl Display, context: Context) -> i32 {
    // A copy: an in-band line may give the connection faults of its own (`context`'s).
    let settings = context.settings;
    // Timed for the close line only (and with --metrics, for the tally too, whatever --quiet
    // says). With --quiet there is none, and the clock is not read at all.
    let started = (!settings.quiet || context.tally.is_some()).then(monotonic);
    if let Stream::Socket(socket) = &stream
        && !settings.max_duration.is_zero()
    {
        stop::expire_after(socket.as_raw_fd(), settings.max_duration);
    }
    // Before the sandbox: its descriptor limit counts the file.
    let mut dump = match (settings.dump, &stream) {
        (Some(dump), Stream::Socket(socket)) => dump_of(dump, socket, &peer, context.serial),
        _ => None,
    };
    // Last: the timer's handler is installed, and nothing else is left to set up.
    if let Some(confine) = context.confine
        && let Err(err) = enter(confine, &stream, context.serial)
    {
        logln!(
            "warning: connection from {peer} closed: unable to enter the sandbox ({err}); \
             --no-sandbox serves without it"
        );
        unserved(&context);
        return 1;
    }
    let mut tls_info = None;
    let mut ws_info = None;
    let mut context = context;
    let (mut outcome, faulted) = match stream {
        Stream::Socket(mut socket) => {
            let asked = match settings.inband {
                true => ask_inband(&socket, &mut context),
                false => None,
            };
            let (outcome, faulted) = match (asked, settings.tls) {
                (Some(end), _) => (echo::Outcome { bytes: 0, end }, None),
                (None, Some(tls)) => {
                    let infos = (&mut tls_info, &mut ws_info);
                    let (outcome, faulted, plain) =
                        over_tls(socket, tls, &context, infos, dump.as_mut());
                    socket = plain;
                    (outcome, faulted)
                }
                (None, None) => match (dump.as_mut(), settings.websocket) {
                    (Some(dump), _) => echo_dumped(&mut socket, dump, &context, &mut ws_info),
                    (None, Some(max)) => websocket::echo(&mut socket, &context, max, &mut ws_info),
                    (None, None) => echo::echo_socket(&mut socket, &context),
                },
            };
            stop::forget_socket();
            // Before the client can see the close: the parent must not count it against
            // --max-per-ip once the client may reconnect.
            if let Some(marks) = context.marks {
                marks.mark_closed(context.serial);
            }
            close(socket, &outcome.end, settings.grace);
            (outcome, faulted)
        }
        // Faults shape sockets only: a pipe's close line has no fault= field.
        Stream::Pipes(from, to) => (
            echo::echo_through_buffer(&mut Pipes(from, to), &context),
            None,
        ),
    };
    // A stop or expiry makes a read or a stall time out: say which it was. (Other ends stand,
    // whatever signal came after them.)
    if matches!(
        outcome.end,
        End::IdleTimeout | End::WriteTimeout | End::Shutdown
    ) {
        if stop::reset() {
            outcome.end = End::ControlReset;
        } else if stop::stopped() {
            outcome.end = End::Shutdown;
        } else if stop::expired() {
            outcome.end = End::MaxDuration;
        }
    }
    // Once the connection is closed: the client never waits for the file.
    let dumped = dump.map(|dump| dump.finish(resets(&outcome.end)));
    let lasted = started.map(|started| monotonic().saturating_sub(started));
    if let Some(tally) = context.tally {
        let faults = faulted.map_or(0, Acted::bits);
        tally.record(outcome.end.kind(), faults, lasted.unwrap_or_default());
        if let Some(ws) = &ws_info {
            tally.record_websocket(ws.messages, ws.close);
        }
    }
    if let Some(lasted) = lasted
        && !settings.quiet
    {
        logln!(
            "close peer={peer} pid={} bytes={} duration={} end={}{}{}{}{}",
            Dec(u64::from(std::process::id())),
            Dec(outcome.bytes),
            Secs(lasted),
            outcome.end,
            FaultField(faulted, context.serial),
            tls_session::Fields(tls_info.as_ref()),
            websocket::Fields(ws_info.as_ref()),
            DumpField(settings.dump.is_some(), dumped.as_ref()),
        );
    }
    let code = if outcome.end.is_normal() { 0 } else { 1 };
    // The process ends right after this: its memory goes with it, and dropping the outcome
    // would only fault in the code that frees it (a page fault, some 2 µs).
    std::mem::forget(outcome);
    code
}

/// `--inband`: takes a `FORKECHO` line off the connection, if it begins with one, and gives the
/// connection the faults it asks for. Some(end) when the connection ends here: a malformed line
/// (answered), or a client that left or went idle first.
fn ask_inband(socket: &TcpStream, context: &mut Context) -> Option<End> {
    match inband::take(socket) {
        Ok(inband::Asked::Nothing) => None,
        Ok(inband::Asked::Faults(faults)) => {
            context.settings.faults = faults.map(|faults| &*Box::leak(faults));
            None
        }
        Ok(inband::Asked::Refused(why)) => Some(End::InbandError(why)),
        Err(err) => Some(End::from_error(err, End::IdleTimeout)),
    }
}

/// Serves a connection over TLS (`tls_session`): the handshake, the echo of its plaintext, and
/// close_notify where the connection ends cleanly. Returns the socket to close, and leaves what
/// the close line says of the session in `info`.
fn over_tls(
    socket: TcpStream,
    tls: &Tls,
    context: &Context,
    (info, ws_info): (&mut Option<tls_session::Info>, &mut Option<websocket::Info>),
    dump: Option<&mut Recorder>,
) -> (echo::Outcome, Option<Acted>, TcpStream) {
    match tls_session::handshake(socket, tls, context.settings.idle_timeout) {
        Err((socket, end)) => (echo::Outcome { bytes: 0, end }, None, socket),
        Ok((mut stream, session)) => {
            *info = Some(session);
            let (outcome, faulted) = match (dump, context.settings.websocket) {
                (Some(dump), _) => echo_dumped(&mut stream, dump, context, ws_info),
                (None, Some(max)) => websocket::echo(&mut stream, context, max, ws_info),
                (None, None) => echo::echo_unspliced(&mut stream, context),
            };
            let socket = match outcome.end {
                _ if stop::reset() => stream.into_socket(),
                End::ClientClosed
                | End::CloseAfter
                | End::Shutdown
                | End::MaxDuration
                | End::IdleTimeout => stream.close_notify(),
                _ => stream.into_socket(),
            };
            (outcome, faulted, socket)
        }
    }
}

/// `--dump`: the connection's dump file, made now (None if it cannot be: said and counted). The
/// packets carry the socket's own addresses (a Unix socket's client is shown as 127.0.0.2, the
/// server as 127.0.0.1 port 7, echo's); the file is named after `peer` as the log names it.
#[inline(never)]
fn dump_of(dump: &Dump, socket: &TcpStream, peer: &impl Display, serial: u32) -> Option<Recorder> {
    let unix = (
        SocketAddr::from(([127, 0, 0, 2], 1024 + (serial % 60_000) as u16)),
        SocketAddr::from(([127, 0, 0, 1], 7)),
    );
    let ends = socket
        .peer_addr()
        .and_then(|p| Ok((p, socket.local_addr()?)));
    Recorder::tcp(dump, serial, peer, ends.unwrap_or(unix))
}

/// Echoes a dumped connection (a socket or a TLS session), recording every read and write: as
/// raw echo, or message by message with `--websocket`.
#[inline(never)]
fn echo_dumped<S: Shapeable>(
    stream: &mut S,
    recorder: &mut Recorder,
    context: &Context,
    ws_info: &mut Option<websocket::Info>,
) -> (echo::Outcome, Option<Acted>) {
    let mut dumped = Dumped {
        inner: stream,
        recorder,
    };
    match context.settings.websocket {
        Some(max) => websocket::echo(&mut dumped, context, max, ws_info),
        None => echo::echo_unspliced(&mut dumped, context),
    }
}

/// Whether the connection ends with a reset from our side (`close`).
fn resets(end: &End) -> bool {
    stop::reset() || matches!(end, End::WriteTimeout | End::ResetAfter)
}

/// Counts a connection closed before it was served (its child could not set it up) as ended by an
/// error, so the metrics' sums still add up.
pub fn unserved(context: &Context) {
    if let Some(tally) = context.tally {
        tally.record(End::ERROR, 0, Duration::ZERO);
    }
}

/// Enters the sandbox, keeping the connection's descriptors and the log's. `serial` is the
/// connection number (for the test hook).
fn enter(sandbox: Confine, stream: &Stream, serial: u32) -> io::Result<()> {
    let highest = match stream {
        Stream::Socket(socket) => socket.as_raw_fd(),
        Stream::Pipes(from, to) => from.as_raw_fd().max(to.as_raw_fd()),
    };
    sandbox.enter(highest.max(crate::log::fd()))?;
    if serial == 1 && testhooks::armed(Hook::ForbiddenSyscall) {
        // A system call no child makes: the sandbox kills the child here.
        // SAFETY: socket(2) with constant arguments; whatever it returns is left alone.
        unsafe { nix::libc::socket(nix::libc::AF_INET, nix::libc::SOCK_STREAM, 0) };
    }
    Ok(())
}

/// How long a closing connection waits for the client to finish: see `close`. At shutdown, half
/// of `--grace` at most, so that the parent does not kill a child that is merely closing.
const LINGER: Duration = Duration::from_secs(2);

/// Closes the socket the way its end calls for.
/// - Ended by a stop signal or `--max-duration`: a lingering close (Apache's). The client may
///   still be sending, and closing with unread input, or receiving input after our FIN once the
///   receiving side is shut, makes the kernel answer with a reset that throws away the echo still
///   queued for the client. So: FIN after the queued echo (shutdown of the sending side only),
///   then read and discard until the client closes too, for at most `LINGER`, then close.
/// - A client that read nothing of its echo for the timeout: abort with a reset (SO_LINGER 0),
///   so its unsent echo does not sit in kernel memory for minutes. `--reset-after`: the same
///   reset, on purpose.
/// - `--close-after`, a malformed in-band line's answer, and a WebSocket close for a broken
///   protocol or an HTTP error: the lingering close, so the client gets exactly the bytes before
///   the FIN and no reset, whatever it still sends.
/// - The control socket's `reset`: a reset.
/// - Otherwise the client has closed, reset or gone idle: a plain close.
#[unsafe(link_section = ".text.hot.child")]
fn close(socket: TcpStream, end: &End, grace: Duration) {
    match end {
        // The control socket's `reset`, whatever the echo was doing when it came.
        _ if stop::reset() => {
            let _ = SockRef::from(&socket).set_linger(Some(Duration::ZERO));
        }
        End::WriteTimeout | End::ResetAfter => {
            let _ = SockRef::from(&socket).set_linger(Some(Duration::ZERO));
        }
        End::CloseAfter | End::InbandError(_) | End::WebSocket(_) => linger(&socket, LINGER),
        End::Reset | End::ClientClosed | End::Failed(_) => {}
        _ if stop::stopped() => linger(&socket, LINGER.min(grace / 2)),
        _ if stop::expired() => linger(&socket, LINGER),
        _ => {}
    }
}

fn linger(socket: &TcpStream, most: Duration) {
    if socket.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + most;
    let mut discard = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match (&*socket).read(&mut discard) {
            Ok(0) => return,
            Ok(_) => {}
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            // Timed out (perhaps early, after a second stop signal), or reset: done.
            Err(_) => return,
        }
    }
}

/// The close line's ` fault=… conn=N` fields: present only when faults were asked for, with the
/// connection's number, which `--fault-on` and `--fault-rate` decided by.
struct FaultField(Option<Acted>, u32);

impl Display for FaultField {
    #[unsafe(link_section = ".text.hot.child")]
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(acted) => write!(f, " fault={acted} conn={}", self.1),
            None => Ok(()),
        }
    }
}

/// The close line's ` dump=FILE` field with `--dump` (`none` when no file could be made), and
/// ` dump-end=cut` or `failed` when the file does not hold the whole connection.
struct DumpField<'a>(bool, Option<&'a (Name, State)>);

impl Display for DumpField<'_> {
    #[unsafe(link_section = ".text.hot.child")]
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            _ if !self.0 => Ok(()),
            None => f.write_str(" dump=none dump-end=failed"),
            Some((name, State::Writing)) => write!(f, " dump={name}"),
            Some((name, State::Cut)) => write!(f, " dump={name} dump-end=cut"),
            Some((name, State::Failed)) => write!(f, " dump={name} dump-end=failed"),
        }
    }
}

/// stdin for reading and stdout for writing, unbuffered (std's stdout buffers by line).
struct Pipes(File, File);

impl Read for Pipes {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Conn for Pipes {}

impl Write for Pipes {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.1.write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

//! The echo protocol (RFC 862): every byte read is written back, in order, until the client ends.
//!
//! `echo_socket` chooses the path for a connection, in this one place:
//! - a connection `faults` picked: `shaped` (read/write, delayed, throttled, cut, reset, ...);
//! - otherwise `copy::echo_small` through a small stack buffer until one read fills it, then
//!   `splice` (bulk transfers are spliced after their first KiB; most connections never send that
//!   much at once, and for them read/write is cheaper than a pipe and two splices per message);
//! - with `--no-splice`, or where splice is refused, `copy::echo_copying` through the whole
//!   buffer;
//! - a TLS session, or a dumped connection (`echo_unspliced`): shaped, or `copy::echo_copying`,
//!   over the plaintext (splice never shows the child what it moves).
//!
//! Every path writes through `stall` (never blocking, stalls timed from the last byte the client
//! took), counts what reached the client in the `Session`'s total, and ends with an `Outcome`:
//! the bytes echoed and why it ended (`End`, the close line's `end=`).

pub mod copy;
pub mod outcome;
pub mod shapeable;
pub mod shaped;
pub mod splice;
pub mod stall;

use std::net::TcpStream;

use nix::sys::mman::MapFlags;

use super::context::Context;
use crate::faults::Acted;
use crate::memory;
pub use outcome::{End, Outcome, Session};
use shapeable::Shapeable;
use splice::Spliced;
use stall::Conn;

/// Echoes a TLS session, or a connection whose bytes are dumped: shaped when `faults` picked
/// the connection, otherwise read/write through the buffer (splice cannot see plaintext, and
/// moves bytes the child never sees).
pub fn echo_unspliced<S: Shapeable>(stream: &mut S, context: &Context) -> (Outcome, Option<Acted>) {
    shaped_or(stream, context, echo_through_buffer)
}

/// Echoes a connection's socket on the path its context calls for (see the module docs).
/// Returns the outcome and, when faults were asked for, which of them acted (none, if
/// `--fault-rate` left this connection out).
#[unsafe(link_section = ".text.hot.child")]
pub fn echo_socket(socket: &mut TcpStream, context: &Context) -> (Outcome, Option<Acted>) {
    shaped_or(socket, context, echo_plain)
}

/// The unshaped echo of a socket. A named function, not a closure: a closure is compiled apart
/// from the function it is written in, outside its section (`.text.hot.child`: see `child`).
#[unsafe(link_section = ".text.hot.child")]
fn echo_plain(socket: &mut TcpStream, context: &Context) -> Outcome {
    match context.settings.splice {
        true => small_then_splice(socket, context),
        false => echo_through_buffer(socket, context),
    }
}

/// The shaped echo if the faults pick this connection, otherwise `plain`; with the faults that
/// acted, when any were asked for.
#[inline(always)]
fn shaped_or<S: Shapeable>(
    stream: &mut S,
    context: &Context,
    // A function pointer, not `impl FnOnce`: called through the FnOnce trait, a function gets a
    // shim compiled outside `.text.hot.child`, with the function inlined into it.
    plain: fn(&mut S, &Context) -> Outcome,
) -> (Outcome, Option<Acted>) {
    match context.settings.faults {
        Some(faults) if faults.applies(context.serial, context.peer) => {
            let (outcome, acted) = shaped::echo_shaped(stream, faults, context);
            (outcome, Some(acted))
        }
        faults => (plain(stream, context), faults.map(|_| Acted::default())),
    }
}

/// How much a read must fill before the connection counts as bulk and moves to splice. 1 KiB,
/// not 4: a 4 KiB buffer dirtied one more stack page in every child (USS 36 KiB against 32,
/// measured in round 2).
const SMALL: usize = 1024;

/// Echoes with read/write through a small stack buffer until one read fills it, then with
/// splice (or, where splice is refused, read/write through the full buffer).
#[unsafe(link_section = ".text.hot.child")]
fn small_then_splice(socket: &mut TcpStream, context: &Context) -> Outcome {
    let session = Session::of(context);
    let mut small = [0u8; SMALL];
    let len = SMALL.min(context.settings.buffer_size);
    let echoed = match copy::echo_small(socket, &mut small[..len], &session) {
        copy::Echoed::Ended(outcome) => return outcome,
        copy::Echoed::Filled { bytes } => bytes,
    };
    let mut rest = match splice::echo_spliced(socket, context.settings.buffer_size, &session) {
        Spliced::Done(outcome) => outcome,
        Spliced::Unsupported => echo_through_buffer(socket, context),
    };
    rest.bytes += echoed;
    rest
}

/// The read/write echo, through a buffer of fresh anonymous memory: the child dirties only the
/// pages its reads fill, where a zeroed heap allocation would dirty all of them at once.
pub fn echo_through_buffer<S: Conn>(stream: &mut S, context: &Context) -> Outcome {
    let session = Session::of(context);
    let len = context.settings.buffer_size;
    match memory::map(len, MapFlags::MAP_PRIVATE) {
        Ok(start) => {
            // The child never unmaps it (it ends with _exit) and nothing else refers to it.
            // SAFETY: `len` readable, writable, zero-filled bytes, borrowed only here.
            let buf = unsafe { std::slice::from_raw_parts_mut(start.as_ptr(), len) };
            copy::echo_copying(stream, buf, &session)
        }
        Err(_) => copy::echo_copying(stream, &mut vec![0u8; len], &session),
    }
}

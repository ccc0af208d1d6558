//! Socket options neither socket2 nor nix offers, set as the plain ints they are: the listeners'
//! TCP_DEFER_ACCEPT (`setup/listener.rs`) and a waiting PROXY connection's SO_RCVLOWAT
//! (`parent/proxy.rs`). Nothing here keeps any state.

use std::io;
use std::os::fd::AsRawFd;

use nix::libc;

/// setsockopt(2) of an int option on `socket`.
pub fn set_int(
    socket: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: i32,
) -> io::Result<()> {
    // SAFETY: setsockopt reads one int from `value`, on the socket's own fd.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match done {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

//! Socket options: the ones every connection starts with (`connection_options`: set on a TCP
//! listener by `setup`, for its connections to inherit; by a child on its Unix connection, which
//! inherits none; by `--inetd` on its one connection), and those neither socket2 nor nix offers,
//! set as the plain ints they are: the listeners' TCP_DEFER_ACCEPT (`setup/listener.rs`) and a
//! waiting PROXY connection's SO_RCVLOWAT (`parent/proxy.rs`). Nothing here keeps any state.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::libc;
use socket2::{Domain, Socket};

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

/// On a TCP socket, TCP_NODELAY (each read is written back at once; Nagle's algorithm would only
/// hold small echoes back) and SO_OOBINLINE (an urgent byte, telnet's "send synch", is data to
/// echo in order; without it read(2) skips it); and, unless `idle_timeout` is zero,
/// SO_RCVTIMEO/SO_SNDTIMEO.
pub fn connection_options(socket: &Socket, idle_timeout: Duration) -> io::Result<()> {
    let domain = socket.domain()?;
    if domain == Domain::IPV4 || domain == Domain::IPV6 {
        socket.set_tcp_nodelay(true)?;
        socket.set_out_of_band_inline(true)?;
    }
    if !idle_timeout.is_zero() {
        socket.set_read_timeout(Some(idle_timeout))?;
        socket.set_write_timeout(Some(idle_timeout))?;
    }
    Ok(())
}

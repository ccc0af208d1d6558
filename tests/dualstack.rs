//! The default bind: one `[::]` socket serving IPv6 and IPv4 clients.
//!
//! The default listens on every interface, and tests may only listen on loopback. So this test
//! runs the server in a private network namespace whose only interface is loopback: a thread
//! unshares its network namespace (a per-thread property on Linux), brings `lo` up, spawns
//! forkecho from that thread (the child inherits the namespace) and connects from it too.

mod common;

use std::io;
use std::process::Command;
use std::thread;

use common::{Server, round_trip};
use nix::libc;
use nix::sched::{CloneFlags, unshare};

#[test]
fn default_bind_serves_ipv6_and_ipv4_on_one_socket() {
    thread::spawn(|| {
        if let Err(err) = unshare(CloneFlags::CLONE_NEWNET) {
            eprintln!("skipped: a private network namespace needs CAP_SYS_ADMIN ({err})");
            return;
        }
        bring_up_loopback().expect("bring up lo in the private namespace");

        let mut command = Command::new(common::binary());
        command.args(["--port", "0"]);
        let server = Server::spawn(command);
        let port = server.addr.port();

        let mut v4 = common::connect(([127, 0, 0, 1], port).into());
        assert_eq!(round_trip(&mut v4, b"over IPv4\n"), b"over IPv4\n");
        // IPv4 peers reach a dual-stack socket as ::ffff:a.b.c.d and are logged as plain IPv4.
        server.accept_line_for(v4.local_addr().unwrap());

        if !common::have_ipv6() {
            assert_eq!(server.addr.to_string(), format!("0.0.0.0:{port}"));
            eprintln!(
                "skipped the IPv6 half: this host has no IPv6, so forkecho fell back to IPv4"
            );
            return;
        }
        assert_eq!(server.addr.to_string(), format!("[::]:{port}"));
        let mut v6 = common::connect(
            "[::1]:0"
                .parse::<std::net::SocketAddr>()
                .map(|mut a| {
                    a.set_port(port);
                    a
                })
                .unwrap(),
        );
        assert_eq!(round_trip(&mut v6, b"over IPv6\n"), b"over IPv6\n");
        server.accept_line_for(v6.local_addr().unwrap());
        assert!(
            !server.log().contains("::ffff:"),
            "mapped addresses must be unmapped"
        );
    })
    .join()
    .expect("the namespace thread");
}

/// `ip link set lo up`, without needing iproute2: SIOCGIFFLAGS, set IFF_UP, SIOCSIFFLAGS.
fn bring_up_loopback() -> io::Result<()> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    // We touch only the flags member of the union, which SIOCGIFFLAGS fills in.
    // SAFETY: both ioctls read and write only the ifreq we pass, which outlives the calls.
    let result = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
            Err(io::Error::last_os_error())
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: fd is ours and closed once.
    unsafe { libc::close(fd) };
    result
}

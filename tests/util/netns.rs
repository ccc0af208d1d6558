//! A private network namespace for tests that must listen beyond loopback addresses the host
//! has (the dual-stack default bind, IPv6 prefixes): a thread unshares its network namespace (a
//! per-thread property on Linux), brings `lo` up, with IPv6 addresses if asked, and runs the test
//! there; a forkecho spawned from that thread inherits the namespace.

#![allow(dead_code)] // each test crate uses a different part of this module

use std::io;
use std::thread;

use nix::libc;
use nix::sched::{CloneFlags, unshare};

/// Runs `test` on a thread of its own in a new network namespace whose `lo` is up and carries
/// `v6` (each a /64). Skips with a message where namespaces need privileges the test lacks, or
/// where loopback takes no IPv6 address; panics if `lo` cannot be brought up.
pub fn in_private_network(v6: &'static [&'static str], test: impl FnOnce() + Send + 'static) {
    thread::spawn(move || {
        if let Err(err) = unshare(CloneFlags::CLONE_NEWNET) {
            eprintln!("skipped: a private network namespace needs CAP_SYS_ADMIN ({err})");
            return;
        }
        bring_up_loopback().expect("bring up lo in the private namespace");
        if let Err(err) = add_ipv6(v6) {
            eprintln!("skipped: no IPv6 addresses on loopback here ({err})");
            return;
        }
        test();
    })
    .join()
    .expect("the namespace thread");
}

fn check(done: libc::c_int) -> io::Result<()> {
    match done {
        0.. => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// A datagram socket of `family` for the interface ioctls, closed when dropped.
struct Ioctl(libc::c_int);

impl Ioctl {
    fn new(family: libc::c_int) -> io::Result<Ioctl> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        check(fd).map(|()| Ioctl(fd))
    }
}

impl Drop for Ioctl {
    fn drop(&mut self) {
        // SAFETY: the fd is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

/// `lo`'s ifreq, with its name filled in.
fn lo() -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    req
}

/// `ip link set lo up`, without needing iproute2: SIOCGIFFLAGS, set IFF_UP, SIOCSIFFLAGS.
fn bring_up_loopback() -> io::Result<()> {
    let socket = Ioctl::new(libc::AF_INET)?;
    let mut req = lo();
    // Only the flags member of the union is used, and SIOCGIFFLAGS fills it in.
    // SAFETY: the ioctls read and write only `req`, which outlives them.
    unsafe {
        check(libc::ioctl(socket.0, libc::SIOCGIFFLAGS, &mut req))?;
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        check(libc::ioctl(socket.0, libc::SIOCSIFFLAGS, &req))
    }
}

/// `ip addr add ADDR/64 dev lo` for each of `addrs`, with ioctls only, and waits until each can
/// be bound. A new IPv6 address is tentative until Duplicate Address Detection is done with it,
/// even on loopback, where the kernel finishes it from a work queue a moment later: a test that
/// binds it at once gets EADDRNOTAVAIL (seen on a first `cargo test`). So DAD is turned off on
/// this namespace's `lo` first, and every address is checked bindable before the test runs.
fn add_ipv6(addrs: &[&str]) -> io::Result<()> {
    if addrs.is_empty() {
        return Ok(());
    }
    // Per namespace: /proc/sys/net is the writing thread's namespace's.
    std::fs::write("/proc/sys/net/ipv6/conf/lo/accept_dad", "0")?;
    let v4 = Ioctl::new(libc::AF_INET)?;
    let v6 = Ioctl::new(libc::AF_INET6)?;
    let mut req = lo();
    // SAFETY: SIOCGIFINDEX reads the name and writes the index member of `req` only.
    check(unsafe { libc::ioctl(v4.0, libc::SIOCGIFINDEX, &mut req) })?;
    // SAFETY: SIOCGIFINDEX filled in the index member.
    let index = unsafe { req.ifr_ifru.ifru_ifindex };
    for addr in addrs {
        let ip: std::net::Ipv6Addr = addr.parse().expect("an IPv6 address");
        let add = libc::in6_ifreq {
            ifr6_addr: libc::in6_addr {
                s6_addr: ip.octets(),
            },
            ifr6_prefixlen: 64,
            ifr6_ifindex: index,
        };
        // SAFETY: SIOCSIFADDR on an AF_INET6 socket reads one in6_ifreq.
        check(unsafe { libc::ioctl(v6.0, libc::SIOCSIFADDR, &add) })?;
    }
    for addr in addrs {
        let bind = || std::net::UdpSocket::bind((addr.parse::<std::net::Ipv6Addr>().unwrap(), 0));
        let deadline = std::time::Instant::now() + super::DEADLINE;
        while let Err(err) = bind() {
            if err.kind() != io::ErrorKind::AddrNotAvailable || std::time::Instant::now() > deadline
            {
                return Err(err);
            }
            thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    Ok(())
}

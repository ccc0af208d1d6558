//! One datagram in, one out: recvmsg(2) and sendmsg(2) with the packet-info control messages
//! (IP_PKTINFO, IPV6_PKTINFO) that say which local address a datagram was sent to, so that the
//! reply can leave from that very address (a wildcard socket on a host with several addresses,
//! or dual stack, would otherwise answer from whichever address the route prefers, and a client
//! that connected its socket would drop the answer).
//!
//! Used by the UDP worker alone (`child::udp`), on its non-blocking sockets, with buffers it
//! owns: no allocation per datagram.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;

use nix::libc;
use socket2::SockAddr;

/// Where a datagram was sent: the header's destination, and for IPv4 the address the kernel
/// would answer from (they differ for a broadcast).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    pub to: IpAddr,
    /// IPv4: `ipi_spec_dst`; IPv6: the destination itself.
    pub answer_from: IpAddr,
    pub ifindex: u32,
}

/// A datagram received into the caller's buffer.
#[derive(Debug)]
pub struct Received {
    pub len: usize,
    pub from: SocketAddr,
    /// With packet info turned on (wildcard sockets).
    pub local: Option<Local>,
    /// The datagram did not fit the buffer (MSG_TRUNC): `len` is its real length.
    pub truncated: bool,
}

/// Room for both packet-info messages, aligned as cmsghdr needs.
#[repr(C, align(8))]
struct Control([u8; 128]);

/// Asks the kernel to say where each datagram was sent, on a socket of this family (both for a
/// dual-stack IPv6 socket: IPv4 datagrams then come with IP_PKTINFO, which names a broadcast).
pub fn want_packet_info(fd: RawFd, ipv6: bool) -> io::Result<()> {
    let on = 1;
    let set = |level, name| crate::sockopt::set_int(&fd, level, name, on);
    if ipv6 {
        set(libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)?;
        // Refused on an IPv6-only socket, which gets no IPv4 datagrams anyway.
        let _ = set(libc::IPPROTO_IP, libc::IP_PKTINFO);
        Ok(())
    } else {
        set(libc::IPPROTO_IP, libc::IP_PKTINFO)
    }
}

/// Receives one datagram: without waiting (WouldBlock when none is there), or, with `wait`, up
/// to the socket's receive timeout. With `info` (a wildcard socket), through recvmsg(2) and its
/// packet info; otherwise through recvfrom(2), which costs the kernel less (no message header or
/// vector to copy in): with 32 datagrams of 64 bytes in flight, recvmsg and sendmsg took the
/// worker to 1.15 × the C floor's CPU per datagram, recvfrom and sendto to 1.05 ×.
pub fn recv(fd: RawFd, buf: &mut [u8], wait: bool, info: bool) -> io::Result<Received> {
    let asked = match wait {
        true => libc::MSG_TRUNC,
        false => libc::MSG_DONTWAIT | libc::MSG_TRUNC,
    };
    if !info {
        return recv_plain(fd, buf, asked);
    }
    let mut control = Control([0; 128]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control_len = 0;
    // try_init hands a zeroed address buffer and its length to fill; recvmsg writes at most that
    // much address, and into `iov` and `control`, which outlive the call.
    // SAFETY: as above: every buffer recvmsg writes is ours, alive and of the length it is told.
    let (len, addr) = unsafe {
        SockAddr::try_init(|storage, storage_len| {
            let mut msg: libc::msghdr = zeroed();
            msg.msg_name = storage.cast();
            msg.msg_namelen = *storage_len;
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.0.as_mut_ptr().cast();
            msg.msg_controllen = control.0.len() as _;
            let n = libc::recvmsg(fd, &raw mut msg, asked);
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            *storage_len = msg.msg_namelen;
            control_len = msg.msg_controllen as usize;
            Ok(n as usize)
        })
    }?;
    received(len, &addr, buf.len(), packet_info(&control, control_len))
}

/// A datagram of real length `len` (MSG_TRUNC makes both calls return it, so a length beyond the
/// buffer is a truncation) from `addr`.
fn received(
    len: usize,
    addr: &SockAddr,
    room: usize,
    local: Option<Local>,
) -> io::Result<Received> {
    let from = addr
        .as_socket()
        .ok_or_else(|| io::Error::other("a datagram from no IP address"))?;
    Ok(Received {
        len,
        from,
        local,
        truncated: len > room,
    })
}

/// recvfrom(2), with MSG_TRUNC among `flags`.
fn recv_plain(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<Received> {
    // recvfrom writes at most `buf.len()` bytes into `buf` and at most the given length of
    // address into the zeroed storage try_init hands over.
    // SAFETY: as above: both buffers are ours, alive and of the length recvfrom is told.
    let (len, addr) = unsafe {
        SockAddr::try_init(|storage, storage_len| {
            let n = libc::recvfrom(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags,
                storage.cast(),
                storage_len,
            );
            match n {
                0.. => Ok(n as usize),
                _ => Err(io::Error::last_os_error()),
            }
        })
    }?;
    received(len, &addr, buf.len(), None)
}

/// The packet info among the control messages: IP_PKTINFO if there is one (it names the answer
/// address of an IPv4 datagram, also on a dual-stack socket), else IPV6_PKTINFO.
fn packet_info(control: &Control, len: usize) -> Option<Local> {
    // A zeroed msghdr pointing at our control buffer, with the length the kernel wrote, is what
    // the CMSG_* macros walk.
    // SAFETY: they never read past msg_controllen, which is within the buffer.
    unsafe {
        let mut msg: libc::msghdr = zeroed();
        msg.msg_control = control.0.as_ptr().cast_mut().cast();
        msg.msg_controllen = len.min(control.0.len()) as _;
        let mut v6 = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let info = data.cast::<libc::in_pktinfo>().read_unaligned();
                    return Some(Local {
                        to: IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))),
                        answer_from: IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            info.ipi_spec_dst.s_addr,
                        ))),
                        ifindex: info.ipi_ifindex as u32,
                    });
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info = data.cast::<libc::in6_pktinfo>().read_unaligned();
                    let to = IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr));
                    v6 = Some(Local {
                        to,
                        answer_from: to,
                        ifindex: info.ipi6_ifindex,
                    });
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
        v6
    }
}

/// Sends `data` to `to` without waiting, from `local`'s answer address when given. A socket
/// buffer that is full is WouldBlock: the datagram is dropped, as a router would.
///
/// Long on purpose: the message header and its control message are built and sent within one
/// unsafe context, so the buffers they point into visibly outlive the call.
pub fn send(fd: RawFd, data: &[u8], to: SocketAddr, local: Option<&Local>) -> io::Result<()> {
    let to = SockAddr::from(to);
    if local.is_none() {
        // SAFETY: sendto reads `data` and the address, both alive for the call.
        let sent = unsafe {
            libc::sendto(
                fd,
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                to.as_ptr().cast(),
                to.len(),
            )
        };
        return match sent {
            0.. => Ok(()),
            _ => Err(io::Error::last_os_error()),
        };
    }
    let mut control = Control([0; 128]);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // The msghdr points at `to`, `iov` and `control`, which outlive the call; the control message
    // is written within the buffer through CMSG_FIRSTHDR, sized by CMSG_SPACE.
    // SAFETY: as above: sendmsg reads only our live buffers, within the lengths given.
    let sent = unsafe {
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = to.as_ptr().cast_mut().cast();
        msg.msg_namelen = to.len();
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        if let Some(local) = local {
            msg.msg_control = control.0.as_mut_ptr().cast();
            let v4_answer = match local.answer_from {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(v6) => v6.to_ipv4_mapped(),
            };
            match (v4_answer, local.answer_from) {
                // An IPv4 answer (also on a dual-stack socket, whose IPv4 path reads IP_PKTINFO).
                (Some(v4), _) => {
                    let space = libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32);
                    msg.msg_controllen = space as _;
                    let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
                    (*cmsg).cmsg_level = libc::IPPROTO_IP;
                    (*cmsg).cmsg_type = libc::IP_PKTINFO;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
                    let info = libc::in_pktinfo {
                        ipi_ifindex: 0,
                        ipi_spec_dst: libc::in_addr {
                            s_addr: u32::from(v4).to_be(),
                        },
                        ipi_addr: libc::in_addr { s_addr: 0 },
                    };
                    libc::CMSG_DATA(cmsg)
                        .cast::<libc::in_pktinfo>()
                        .write_unaligned(info);
                }
                (None, IpAddr::V6(v6)) => {
                    let space = libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32);
                    msg.msg_controllen = space as _;
                    let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
                    (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
                    (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as _;
                    let info = libc::in6_pktinfo {
                        ipi6_addr: libc::in6_addr {
                            s6_addr: v6.octets(),
                        },
                        ipi6_ifindex: local.ifindex,
                    };
                    libc::CMSG_DATA(cmsg)
                        .cast::<libc::in6_pktinfo>()
                        .write_unaligned(info);
                }
                (None, IpAddr::V4(_)) => unreachable!("an IPv4 answer address maps to itself"),
            }
        }
        libc::sendmsg(fd, &raw const msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    match sent {
        n if n >= 0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

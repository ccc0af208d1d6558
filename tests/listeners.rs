//! More than one address and more than one process: several `--bind`s (addresses and host
//! names) in one poll loop, two forkecho instances sharing a port with `--reuse-port`, and
//! several sockets passed the way systemd passes a unit's `ListenStream=`s.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::util::{Server, binary, round_trip};

/// The listening sockets among the fds of `pid` (by inode, from /proc/net/tcp{,6}), counted.
fn listening_fds(pid: i32) -> usize {
    let listening: HashSet<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|l| l.split_whitespace().nth(3) == Some("0A"))
                .filter_map(|l| l.split_whitespace().nth(9).map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .filter(|inode| listening.contains(inode))
        .count()
}

#[test]
fn several_binds_listen_on_each_in_one_loop_and_announce_all_on_one_line() {
    let server = Server::start(&["-b", "127.0.0.1", "-b", "127.0.0.2", "-b", "127.0.0.3"]);
    assert_eq!(
        server.addresses().tcp.len(),
        3,
        "{:?}",
        server.addresses().tcp
    );
    let port = server.addr.port();
    for (addr, ip) in server
        .addresses()
        .tcp
        .iter()
        .zip(["127.0.0.1", "127.0.0.2", "127.0.0.3"])
    {
        assert_eq!(*addr, SocketAddr::new(ip.parse().unwrap(), port));
    }
    let mut clients: Vec<_> = server
        .addresses()
        .tcp
        .iter()
        .map(|&a| crate::util::connect(a))
        .collect();
    for client in &mut clients {
        assert_eq!(round_trip(client, b"which one?"), b"which one?");
    }
    // No child holds any of the listeners.
    let (_client, child) = server.connected_child();
    assert_eq!(listening_fds(child.as_raw()), 0);
    assert_eq!(listening_fds(server.pid().as_raw()), 3);
    let startup = server
        .wait_for(|l| l.name() == "listening")
        .expect("the startup line");
    assert!(
        startup.line.contains(&format!(
            "listening on 127.0.0.1:{port} 127.0.0.2:{port} 127.0.0.3:{port} "
        )),
        "{startup}"
    );
}

#[test]
fn a_host_name_listens_on_what_it_resolves_to() {
    let server = Server::start(&["--bind", "localhost"]);
    assert!(!server.addresses().tcp.is_empty());
    for &addr in &server.addresses().tcp {
        assert!(addr.ip().is_loopback(), "{addr}");
        let mut client = crate::util::connect(addr);
        assert_eq!(round_trip(&mut client, b"by name"), b"by name");
    }
}

#[test]
fn two_instances_with_reuse_port_share_a_port_and_both_serve() {
    let first = Server::start(&["--reuse-port", "-b", "127.0.0.1"]);
    let port = first.addr.port().to_string();
    let second = Server::start(&["--reuse-port", "-b", "127.0.0.1", "-p", &port]);
    assert_eq!(second.addr, first.addr);
    // The kernel spreads connections by a hash of the client's address: within a couple of
    // hundred connections from different ports, both instances get some.
    let accepted = |server: &Server| {
        server
            .events()
            .iter()
            .filter(|l| l.name() == "accept")
            .count()
    };
    for n in 0..200 {
        let mut client = crate::util::connect(first.addr);
        assert_eq!(round_trip(&mut client, b"x"), b"x");
        drop(client);
        if n % 10 == 9 && accepted(&first) > 0 && accepted(&second) > 0 {
            return;
        }
    }
    panic!(
        "200 connections, {} to the first instance and {} to the second",
        accepted(&first),
        accepted(&second)
    );
}

#[test]
fn without_reuse_port_a_second_instance_is_refused_the_port() {
    let first = Server::start(&["-b", "127.0.0.1"]);
    let out = crate::util::run_to_completion({
        let mut command = Command::new(binary());
        let port = first.addr.port().to_string();
        command.args(["-b", "127.0.0.1", "-p", &port]);
        command
    });
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Address already in use"));
}

#[test]
fn every_listening_socket_systemd_passes_is_served() {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.2:0").unwrap();
    let (fd_a, fd_b): (RawFd, RawFd) = (a.as_raw_fd(), b.as_raw_fd());
    let mut command = Command::new("sh");
    command.args([
        "-c",
        "LISTEN_PID=$$ LISTEN_FDS=2 exec \"$0\" \"$@\"",
        binary(),
    ]);
    // SAFETY: only dup2, which is async-signal-safe, between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // To 10 and 11 first, so that neither lands on the other's source.
            for (from, to) in [(fd_a, 10), (fd_b, 11), (10, 3), (11, 4)] {
                if nix::libc::dup2(from, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let server = Server::spawn(command);
    let expected = [a.local_addr().unwrap(), b.local_addr().unwrap()];
    assert_eq!(server.addresses().tcp, expected);
    drop((a, b));
    for addr in expected {
        let mut client = crate::util::connect(addr);
        assert_eq!(round_trip(&mut client, b"passed"), b"passed");
    }
}

#[test]
fn a_link_local_address_is_bound_with_its_interface_and_pinged_the_same_way() {
    crate::util::netns::in_private_network(&["fe80::1"], || {
        let mut process = Command::new(binary())
            .args(["--port", "0", "--bind", "fe80::1%lo", "-q"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn forkecho");
        let mut line = String::new();
        let stdout = process.stdout.take().unwrap();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        // `listening on [fe80::1%1]:PORT`: the scope as the kernel numbers lo.
        let lo = nix::net::if_::if_nametoindex("lo").unwrap();
        let (shown, port) = line.trim_end().rsplit_once(':').expect(&line);
        assert_eq!(shown, format!("listening on [fe80::1%{lo}]"), "{line}");
        let port: u16 = port.parse().unwrap();
        let to = std::net::SocketAddrV6::new("fe80::1".parse().unwrap(), port, 0, lo);
        let mut client = crate::util::connect(to.into());
        assert_eq!(round_trip(&mut client, b"link-local"), b"link-local");
        let target = format!("[fe80::1%lo]:{port}");
        let ping = Command::new(binary())
            .args(["ping", "-c", "1", "-q", &target])
            .output()
            .unwrap();
        assert!(ping.status.success(), "{ping:?}");
        crate::util::fixture::stop(&mut process, crate::util::DEADLINE);
    });
}

//! The default bind: one `[::]` socket serving IPv6 and IPv4 clients.
//!
//! The default listens on every interface, and tests may only listen on loopback. So this test
//! runs the server in a private network namespace whose only interface is loopback
//! (`crate::util::netns`), and connects from it too.

use std::process::Command;

use crate::util::{Server, round_trip};

#[test]
fn default_bind_serves_ipv6_and_ipv4_on_one_socket() {
    crate::util::netns::in_private_network(&[], || {
        let mut command = Command::new(crate::util::binary());
        command.args(["--port", "0"]);
        let server = Server::spawn(command);
        let port = server.addr.port();

        let mut v4 = crate::util::connect(([127, 0, 0, 1], port).into());
        assert_eq!(round_trip(&mut v4, b"over IPv4\n"), b"over IPv4\n");
        // IPv4 peers reach a dual-stack socket as ::ffff:a.b.c.d and are logged as plain IPv4.
        server.accepted(v4.local_addr().unwrap()).unwrap();

        if !crate::util::have_ipv6() {
            assert_eq!(server.addr.to_string(), format!("0.0.0.0:{port}"));
            eprintln!(
                "skipped the IPv6 half: this host has no IPv6, so forkecho fell back to IPv4"
            );
            return;
        }
        assert_eq!(server.addr.to_string(), format!("[::]:{port}"));
        let mut v6 = crate::util::connect(
            "[::1]:0"
                .parse::<std::net::SocketAddr>()
                .map(|mut a| {
                    a.set_port(port);
                    a
                })
                .unwrap(),
        );
        assert_eq!(round_trip(&mut v6, b"over IPv6\n"), b"over IPv6\n");
        server.accepted(v6.local_addr().unwrap()).unwrap();
        assert!(
            !server.log().contains("::ffff:"),
            "mapped addresses must be unmapped"
        );
    });
}

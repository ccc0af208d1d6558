//! A private network namespace for tests that must listen beyond loopback addresses the host
//! has (the dual-stack default bind, IPv6 prefixes): a thread unshares its network namespace (a
//! per-thread property on Linux), brings `lo` up with `ip` (iproute2), with IPv6 addresses if
//! asked, and runs the test there; `ip`, and a forkecho spawned from that thread, inherit the
//! namespace.

use std::process::Command;
use std::thread;

use nix::sched::{CloneFlags, unshare};

/// Runs `test` on a thread of its own in a new network namespace whose `lo` is up and carries
/// `v6` (each a /64). Skips with a message where namespaces need privileges the test lacks, where
/// there is no `ip`, or where loopback takes no IPv6 address; panics if `lo` cannot be brought up.
pub fn in_private_network(v6: &'static [&'static str], test: impl FnOnce() + Send + 'static) {
    thread::spawn(move || {
        if let Err(err) = unshare(CloneFlags::CLONE_NEWNET) {
            eprintln!("skipped: a private network namespace needs CAP_SYS_ADMIN ({err})");
            return;
        }
        let up = match Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .output()
        {
            Ok(up) => up,
            Err(err) => return eprintln!("skipped: no `ip` (iproute2) to bring up lo: {err}"),
        };
        assert!(up.status.success(), "ip link set lo up: {up:?}");
        for addr in v6 {
            // A new IPv6 address is tentative until Duplicate Address Detection is done with it,
            // even on loopback, and binding it fails meanwhile (seen on a first `cargo test`):
            // `nodad` makes it usable at once.
            let prefix = format!("{addr}/64");
            let add = ["addr", "add", &prefix, "dev", "lo", "nodad"];
            let added = Command::new("ip").args(add).output().expect("run ip");
            if !added.status.success() {
                let why = String::from_utf8_lossy(&added.stderr);
                return eprintln!("skipped: no IPv6 addresses on loopback here ({why})");
            }
        }
        test();
    })
    .join()
    .expect("the namespace thread");
}

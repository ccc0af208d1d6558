//! The parent's table of live children: who they serve and since when.
//!
//! A pid enters right after fork, before SIGCHLD is unblocked, and leaves when the main loop
//! drains its exit from the reaper. So while SIGCHLD is blocked, every pid in the table is a
//! child of ours that has not been reaped, and signalling it can never hit a recycled pid.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use nix::unistd::Pid;

/// What the parent remembers of one child.
#[derive(Debug, Clone, Copy)]
pub struct Child {
    pub peer: SocketAddr,
    pub since: Instant,
}

#[derive(Default)]
pub struct Children {
    live: HashMap<Pid, Child>,
}

impl Children {
    pub fn with_capacity(capacity: usize) -> Children {
        Children {
            live: HashMap::with_capacity(capacity),
        }
    }

    pub fn insert(&mut self, pid: Pid, child: Child) {
        self.live.insert(pid, child);
    }

    pub fn remove(&mut self, pid: Pid) -> Option<Child> {
        self.live.remove(&pid)
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    pub fn pids(&self) -> impl Iterator<Item = Pid> + '_ {
        self.live.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_insertions_and_removals() {
        let mut children = Children::with_capacity(4);
        let child = Child {
            peer: "127.0.0.1:5000".parse().unwrap(),
            since: Instant::now(),
        };
        children.insert(Pid::from_raw(10), child);
        children.insert(Pid::from_raw(11), child);
        assert_eq!(children.len(), 2);
        assert_eq!(
            children.remove(Pid::from_raw(10)).map(|c| c.peer),
            Some(child.peer)
        );
        assert!(children.remove(Pid::from_raw(10)).is_none());
        assert_eq!(children.pids().collect::<Vec<_>>(), vec![Pid::from_raw(11)]);
        children.remove(Pid::from_raw(11));
        assert!(children.is_empty());
    }
}

//! Scratch directories for tests that write files (port files, log files, Unix sockets): one
//! per test, named after it and the test process, removed when dropped.

#![allow(dead_code)] // each test module uses a different part of this module

use std::path::PathBuf;

/// A directory of the test's own, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(what: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("forkecho-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// `--bind unix:` for a socket file `name` here.
    pub fn unix(&self, name: &str) -> String {
        format!("unix:{}", self.path(name).display())
    }

    /// The names of the files in it.
    pub fn names(&self) -> Vec<String> {
        std::fs::read_dir(&self.0)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

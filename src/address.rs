//! Where an echo service is, as forkecho shows it and as both sides use it: an IP socket address
//! or a Unix socket's `Name` (`Addr`). The server's `setup` makes listeners on them and names them
//! in the readiness line; `forkecho ping` connects to them. Plain values: nothing here binds,
//! connects or knows either side.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use socket2::SockAddr;

use crate::cli::Bind;

/// Where a listener listens, with the real port: as the readiness line shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Ip(SocketAddr),
    Unix(Name),
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Ip(addr) => addr.fmt(f),
            Addr::Unix(name) => name.fmt(f),
        }
    }
}

impl Addr {
    /// The TCP port, for an IP listener.
    pub fn port(&self) -> Option<u16> {
        match self {
            Addr::Ip(addr) => Some(addr.port()),
            Addr::Unix(_) => None,
        }
    }
}

/// Where a Unix listener listens, as the readiness and log lines show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Name::Path(path) => write!(f, "unix:{}", path.display()),
            Name::Abstract(name) => write!(f, "unix:@{}", name.escape_ascii()),
        }
    }
}

impl Name {
    /// The socket address to bind or connect to. A leading NUL byte makes a name abstract.
    pub fn sockaddr(&self) -> io::Result<SockAddr> {
        match self {
            Name::Path(path) => SockAddr::unix(path),
            Name::Abstract(bytes) => {
                SockAddr::unix(std::ffi::OsStr::from_bytes(&[&[0u8][..], bytes].concat()))
            }
        }
    }

    /// The socket `--bind unix:…` names (None for an IP address or host name).
    pub fn of_bind(bind: &Bind) -> Option<Name> {
        match bind {
            Bind::Unix(path) => Some(Name::Path(path.clone())),
            Bind::Abstract(name) => Some(Name::Abstract(name.as_bytes().to_vec())),
            _ => None,
        }
    }

    /// The name a socket is bound to, or None if it is not a named Unix socket.
    pub fn of(addr: &SockAddr) -> Option<Name> {
        if let Some(path) = addr.as_pathname() {
            return Some(Name::Path(path.to_path_buf()));
        }
        addr.as_abstract_namespace()
            .map(|name| Name::Abstract(name.to_vec()))
    }
}

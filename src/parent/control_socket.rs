//! The control socket itself (`--control PATH`): its listener, its connections and the bytes on
//! them, read and written without ever blocking, and the `Gate` the `down`, `up` and `blackhole`
//! commands set. What a request means is `control`; this file only moves lines. Owned by the
//! parent (`state::Parent`); a child closes every descriptor here.

use std::io::ErrorKind;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::socket::{MsgFlags, recv, send};
use serde_json::{Value, json};
use socket2::Socket;

use crate::log::logln;
use crate::peer::Cred;
use crate::setup::unix::{self, SocketFile};

/// Control connections served at once (each child closes as many).
pub const MOST: usize = crate::child::CONTROL_FDS;
/// The longest request line, newline included.
pub(super) const LINE_MAX: usize = 4096;
/// A control connection that sends nothing for this long is closed.
pub(super) const IDLE: Duration = Duration::from_secs(10);

/// The control socket and its connections.
pub struct Control {
    pub(super) listener: Socket,
    /// Removed at a clean stop.
    pub(super) file: Option<SocketFile>,
    pub(super) clients: Vec<Client>,
    /// Who may control the server besides root: the user it runs as (set once privileges are
    /// dropped).
    pub owner: u32,
}

pub(super) struct Client {
    pub(super) socket: Socket,
    pub(super) cred: Cred,
    /// What has come of the current request line.
    pub(super) input: Vec<u8>,
    pub(super) last: Instant,
    /// It ended, sent too long a line, or did not take a reply: closed once its requests are
    /// answered.
    pub(super) closing: bool,
}

/// Whether the listeners take connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Up,
    /// Shut down: connecting is refused.
    Down,
    /// Listening, never accepting: connections hang once the backlog is full.
    Blackhole,
}

impl Gate {
    pub(super) fn name(self) -> &'static str {
        match self {
            Gate::Up => "up",
            Gate::Down => "down",
            Gate::Blackhole => "blackhole",
        }
    }
}

impl Control {
    pub fn new(listener: Socket, file: Option<SocketFile>) -> Control {
        Control {
            listener,
            file,
            clients: Vec::with_capacity(MOST),
            owner: nix::unistd::geteuid().as_raw(),
        }
    }

    /// Entry `i` of the poll's control slots: connection `i`'s fd, or -1.
    pub fn client_fd(&self, i: usize) -> RawFd {
        self.clients.get(i).map_or(-1, |c| c.socket.as_raw_fd())
    }

    pub fn listener_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// The directory of the socket's file (the sandbox lets the parent remove it there).
    pub fn dir_fd(&self) -> Option<RawFd> {
        self.file.as_ref().map(SocketFile::dir_fd)
    }

    /// Removes the socket file, if it is still the one bound; the name of one left in place.
    pub fn remove_file(&mut self) -> Option<String> {
        self.file.as_mut()?.remove().map(ToString::to_string)
    }

    /// The control connections' fds, for a child to close (-1 for none).
    pub fn client_fds(&self) -> [RawFd; MOST] {
        std::array::from_fn(|i| self.client_fd(i))
    }

    /// When the first idle control connection is due to be closed.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.clients.iter().map(|c| c.last + IDLE).min()
    }
}

/// Reads what `client` (connection `i`) has sent, and queues each whole line in `requests`; an
/// over-long line (answered with an error), or the end of the connection, marks it closing.
pub(super) fn read_lines(
    client: &mut Client,
    requests: &mut Vec<(usize, Result<Vec<u8>, String>)>,
    i: usize,
) {
    let mut buf = [0u8; LINE_MAX];
    loop {
        match recv(client.socket.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => {
                client.closing = true;
                return;
            }
            Ok(n) => {
                client.last = Instant::now();
                client.input.extend_from_slice(&buf[..n]);
                while let Some(at) = client.input.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = client.input.drain(..=at).collect();
                    let line = line.trim_ascii().to_vec();
                    if !line.is_empty() {
                        requests.push((i, Ok(line)));
                    }
                }
                if client.input.len() >= LINE_MAX {
                    requests.push((
                        i,
                        Err(format!("a request line is at most {LINE_MAX} bytes")),
                    ));
                    client.closing = true;
                    return;
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => return,
            Err(_) => {
                client.closing = true;
                return;
            }
        }
    }
}

/// Accepts waiting control connections: at most `MOST` at once, and only from the server's
/// user or root.
pub(super) fn accept(control: &mut Control) {
    loop {
        let socket = match control.listener.accept() {
            Ok((socket, _)) => socket,
            Err(err) if err.kind() == ErrorKind::WouldBlock => return,
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let _ = socket.set_nonblocking(true);
        let cred = match unix::peer(&socket) {
            Ok(cred) => cred,
            Err(_) => continue,
        };
        if cred.uid != control.owner && cred.uid != 0 {
            logln!("control refused from=uid:{} pid={}", cred.uid, cred.pid);
            let error = format!("uid {} may not control this server", cred.uid);
            reply_to(&socket, &refusal(&error));
            continue;
        }
        if control.clients.len() >= MOST {
            reply_to(&socket, &refusal("too many control connections; try again"));
            continue;
        }
        control.clients.push(Client {
            socket,
            cred,
            input: Vec::new(),
            last: Instant::now(),
            closing: false,
        });
    }
}

/// An error reply.
pub(super) fn refusal(error: &str) -> Value {
    json!({ "ok": false, "error": error })
}

/// Sends `reply` and a newline without waiting; false if it did not all go.
pub(super) fn reply_to(socket: &Socket, reply: &Value) -> bool {
    let mut line = reply.to_string();
    line.push('\n');
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    matches!(send(socket.as_raw_fd(), line.as_bytes(), flags), Ok(n) if n == line.len())
}

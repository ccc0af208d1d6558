"""A pytest fixture that starts forkecho, the process-per-connection TCP echo server.

`forkecho(**options)` starts one on a free loopback port and returns once it serves; the
fixture stops every server a test started at teardown, by closing the server's stdin
(`--stdin-lifeline`), and a test process that dies, however it dies, stops its servers too: the
kernel closes their stdin. Each server has a control socket (`--control`): `set_faults`,
`clear_faults`, `down`, `up`, `blackhole`, `reset`, `close` and `status` change it while it
runs. The binary is `$FORKECHO_BIN` (or `$FORKECHO`), else `forkecho` on PATH. It behaves as
the Rust crate forkecho-fixture does; README.md beside this file says where they differ.
"""

import json
import os
import select
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

__all__ = ["Forkecho", "forkecho"]

#: How long a server may take to start, or to stop.
DEADLINE = 20.0


def _binary():
    binary = os.environ.get("FORKECHO_BIN") or os.environ.get("FORKECHO")
    if binary:
        if not os.path.isfile(binary):
            raise RuntimeError(f"FORKECHO_BIN={binary}: no such file")
        return binary
    binary = shutil.which("forkecho")
    if not binary:
        raise RuntimeError(
            "forkecho not found: FORKECHO_BIN is not set and PATH has none; install it with "
            "`cargo install forkecho` (or the Debian package), or set FORKECHO_BIN to its path")
    return binary


def _flags(options):
    """forkecho's command line for keyword options: reset_after=10 is --reset-after 10,
    quiet=True is --quiet; False and None leave an option out."""
    args = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is not False and value is not None:
            args.extend([flag, str(value)])
    return args


def _readiness(stdout, deadline):
    """forkecho's readiness lines: written in one write at the moment it serves, so the first
    read that ends a line has them all; nothing at all means it failed to start."""
    text = b""
    while not text.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stdout], [], [], left)[0]:
            return None
        chunk = os.read(stdout.fileno(), 4096)
        if not chunk:
            break
        text += chunk
    return text.decode(errors="replace")


def _address(text):
    host, port = text.rsplit(":", 1)
    return host.strip("[]"), int(port)


class Forkecho:
    """One forkecho, started by `start` and serving on `addr` until `stop`. Its files (log,
    control socket) go in `directory`, or a new temporary one; the fixture gives it one under
    pytest's own temporary directory, which pytest cleans even after a killed run."""

    def __init__(self, *args, directory=None, **options):
        if directory is None:
            directory = tempfile.mkdtemp(prefix="forkecho-")
        self._dir = str(directory)
        self._final_log = None
        self._log_file = os.path.join(self._dir, "log")
        self._control = os.path.join(self._dir, "control.sock")
        command = [
            _binary(), "--port", "0", "--bind", "127.0.0.1",
            "--log-file", self._log_file, "--control", self._control,
            "--stdin-lifeline", *args, *_flags(options),
        ]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        text = _readiness(self.process.stdout, time.monotonic() + DEADLINE)
        if not text or not text.startswith("listening on "):
            self.stop()
            error = self.process.stderr.read().decode(errors="replace")
            raise RuntimeError(f"forkecho did not start ({self.process.returncode}): {error}")
        #: The readiness lines, as forkecho wrote them.
        self.readiness = text
        self.udp_addr = self.metrics_addr = None
        for line in text.splitlines():
            words = line.split()
            if line.startswith("listening on udp "):
                self.udp_addr = _address(words[3])
            elif line.startswith("listening on "):
                self.addr = _address(words[2])
            elif line.startswith("metrics on http://"):
                self.metrics_addr = _address(words[2][len("http://"):].split("/")[0])
        self.host, self.port = self.addr
        self.pid = self.process.pid

    def control(self, cmd, **fields):
        """Sends one control command (`{"cmd": cmd, **fields}`) and returns the reply; a refusal
        raises RuntimeError with the server's reason."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(DEADLINE)
            sock.connect(self._control)
            sock.sendall(json.dumps({"cmd": cmd, **fields}).encode() + b"\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        reply = json.loads(reply)
        if not reply.get("ok"):
            raise RuntimeError(f"forkecho refused {cmd}: {reply.get('error')}")
        return reply

    def set_faults(self, **faults):
        """Faults for the connections from now on (`reset_after=0`, `delay="100:20"`); returns
        the number of the first connection that gets them."""
        faults = {name.replace("_", "-"): value for name, value in faults.items()}
        return self.control("faults", set=faults)["from_connection"]

    def clear_faults(self):
        """No faults from the next connection on; returns its number."""
        return self.control("faults", clear=True)["from_connection"]

    def down(self):
        """Connecting is refused (ECONNREFUSED) until `up`; live connections go on."""
        self.control("down")

    def up(self):
        """Listening again on the same port (after `down`), or accepting again (`blackhole`)."""
        self.control("up")

    def blackhole(self):
        """Nothing is accepted: connections wait in the backlog, then hang, until `up`."""
        self.control("blackhole")

    def reset(self, source=None):
        """Resets every live connection (from `source`, an address or CIDR, if given)."""
        fields = {"from": source} if source else {}
        return self.control("reset", **fields)["connections"]

    def close(self, source=None):
        """Closes every live connection cleanly (from `source`, if given)."""
        fields = {"from": source} if source else {}
        return self.control("close", **fields)["connections"]

    def status(self):
        """The server's counts, faults and state, as a dict."""
        return self.control("status")

    def log_lines(self):
        """forkecho's log lines so far (after `stop`, all of them)."""
        if self._final_log is not None:
            return self._final_log
        try:
            with open(self._log_file, errors="replace") as file:
                return file.read().splitlines()
        except FileNotFoundError:
            return []

    def stop(self):
        """Stops it (its stdin's end: every connection closed cleanly); returns its exit status.
        Stopping twice is stopping once."""
        if self.process.returncode is not None and self._final_log is not None:
            return self.process.returncode
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            status = self.process.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            stream.close()
        if self._final_log is None:
            self._final_log = self.log_lines()
        shutil.rmtree(self._dir, ignore_errors=True)
        return status


@pytest.fixture
def forkecho(tmp_path_factory):
    """A factory: `forkecho(chunk=1)` starts `forkecho --chunk 1` and returns the server."""
    started = []

    def start(*args, **options):
        # Under pytest's base temporary directory: a run that is killed before teardown leaves
        # it there, and pytest removes it with its old runs (it keeps the last three).
        server = Forkecho(*args, directory=tmp_path_factory.mktemp("forkecho"), **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()

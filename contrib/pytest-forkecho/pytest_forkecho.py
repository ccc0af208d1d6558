"""A pytest fixture that starts forkecho, the process-per-connection TCP echo server.

`forkecho(**options)` starts one on a free loopback port and returns once it serves; the
fixture stops every server a test started at teardown, by closing the server's stdin
(`--stdin-lifeline`). Each server has a control socket (`--control`): `set_faults`,
`clear_faults`, `down`, `up`, `blackhole`, `reset`, `close` and `status` change it while it runs. A test process that dies stops its servers too: their stdin reaches its
end, and `--exit-with-parent` covers the rest. The binary is `$FORKECHO`, or `forkecho` on PATH.
"""

import json
import os
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
    binary = os.environ.get("FORKECHO") or shutil.which("forkecho")
    if not binary:
        raise RuntimeError("forkecho not found: set FORKECHO or put forkecho on PATH")
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


class Forkecho:
    """One forkecho, started by `start` and serving on `addr` until `stop`. Its files (port,
    log, control socket) go in `directory`, or a new temporary one; the fixture gives it one
    under pytest's own temporary directory, which pytest cleans even after a killed run."""

    def __init__(self, *args, directory=None, **options):
        if directory is None:
            directory = tempfile.mkdtemp(prefix="forkecho-")
        self._dir = str(directory)
        self._final_log = None
        self._port_file = os.path.join(self._dir, "port")
        self._log_file = os.path.join(self._dir, "log")
        self._control = os.path.join(self._dir, "control.sock")
        command = [
            _binary(), "--port", "0", "--bind", "127.0.0.1",
            "--port-file", self._port_file, "--log-file", self._log_file,
            "--control", self._control,
            "--stdin-lifeline", "--exit-with-parent", *args, *_flags(options),
        ]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        deadline = time.monotonic() + DEADLINE
        while not os.path.exists(self._port_file):
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode(errors="replace")
                raise RuntimeError(f"forkecho exited with {self.process.returncode}: {error}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("forkecho did not start in time")
            time.sleep(0.005)
        with open(self._port_file) as file:
            self.port = int(file.read())
        self.host = "127.0.0.1"
        self.addr = (self.host, self.port)
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
        with open(self._log_file, errors="replace") as file:
            return file.read().splitlines()

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
        self.process.stderr.close()
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

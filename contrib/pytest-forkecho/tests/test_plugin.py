"""The plugin's own tests, run by CI with pytest-xdist (-n 4) against the built binary."""

import os
import socket
import time

import pytest

import pytest_forkecho


def echo(addr, data):
    with socket.create_connection(addr, timeout=10) as sock:
        sock.sendall(data)
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            # A server that reset the connection at once: this fails too (ENOTCONN, once the
            # reset has arrived), and the read below says what happened.
            pass
        back = b""
        while chunk := sock.recv(65536):
            back += chunk
        return back


def test_a_server_echoes_on_its_own_port(forkecho):
    server = forkecho()
    assert echo(server.addr, b"hello\n") == b"hello\n"
    assert server.host == "127.0.0.1" and server.port > 0


def test_options_become_flags(forkecho):
    # One byte at a time, 50 ms apart: the first read gets one byte.
    server = forkecho(chunk="1:50", quiet=True)
    with socket.create_connection(server.addr, timeout=10) as sock:
        sock.sendall(b"pieces")
        assert sock.recv(64) == b"p"
    assert server.stop() == 0
    lines = server.log_lines()
    assert any(line.startswith("forkecho: faults ") and "chunk=1" in line for line in lines)
    assert not any(line.startswith("forkecho: accept ") for line in lines), lines


def test_faults_show_in_the_log(forkecho):
    server = forkecho(reset_after=4)
    with socket.create_connection(server.addr, timeout=10) as sock:
        sock.sendall(b"12345678")
        got = b""
        try:
            while chunk := sock.recv(64):
                got += chunk
        except ConnectionResetError:
            pass
    assert got == b"1234"
    assert server.stop() == 0
    closes = [line for line in server.log_lines() if line.startswith("forkecho: close ")]
    assert len(closes) == 1 and " end=reset-after " in closes[0], closes


def test_stop_closes_its_stdin_and_it_stops_cleanly(forkecho):
    server = forkecho()
    # The startup log line follows the readiness lines by a moment.
    deadline = time.monotonic() + 20
    while not server.log_lines() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert server.log_lines()[0].startswith("forkecho: listening on 127.0.0.1:")
    assert server.stop() == 0
    lines = server.log_lines()
    assert any(line.startswith("forkecho: stopping lifeline=stdin ") for line in lines), lines
    # Nothing is left: the server, its control socket, its log.
    assert not os.path.exists(server._dir)
    assert server.stop() == 0


def test_two_servers_in_one_test_do_not_share_a_port(forkecho):
    first, second = forkecho(), forkecho()
    assert first.port != second.port
    assert echo(first.addr, b"one") == b"one"
    assert echo(second.addr, b"two") == b"two"


def test_flags_translate_keywords():
    flags = pytest_forkecho._flags({"reset_after": 10, "quiet": True, "delay": None, "x": False})
    assert flags == ["--reset-after", "10", "--quiet"]


def retrying_client(addr, data, attempts):
    """What the code under test might be: a client that retries a failed exchange."""
    for attempt in range(1, attempts + 1):
        try:
            return echo(addr, data), attempt
        except ConnectionError:
            # Reset, or (the reset already in) a write to a broken pipe.
            continue
    raise ConnectionResetError(f"gave up after {attempts} attempts")


def test_a_retry_story_the_first_two_fail_and_the_third_works(forkecho):
    server = forkecho()
    assert server.set_faults(reset_after=0, fault_on="first:2") == 1
    assert retrying_client(server.addr, b"payload", attempts=3) == (b"payload", 3)
    with pytest.raises(ConnectionResetError):
        # A client that gives up sooner fails against the same story.
        fresh = forkecho(reset_after=0, fault_on="first:2")
        retrying_client(fresh.addr, b"payload", attempts=2)


def test_down_and_up_keep_the_port(forkecho):
    server = forkecho()
    server.down()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(server.addr, timeout=10)
    server.up()
    assert echo(server.addr, b"back") == b"back"
    assert server.status()["state"] == "up"


def test_a_refused_command_raises_with_the_reason(forkecho):
    server = forkecho()
    with pytest.raises(RuntimeError, match="'soon'"):
        server.set_faults(delay="soon")


def test_its_files_live_under_pytests_own_temporary_directory(forkecho, tmp_path_factory):
    # So a run killed before teardown leaves nothing pytest does not clean with its old runs.
    server = forkecho()
    base = str(tmp_path_factory.getbasetemp())
    assert server._dir.startswith(base + os.sep), (server._dir, base)
    assert os.path.exists(server._dir)
    server.stop()
    assert not os.path.exists(server._dir)


def test_udp_and_metrics_addresses_come_from_the_readiness_lines(forkecho):
    server = forkecho(udp=True, metrics="127.0.0.1:0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(b"datagram", server.udp_addr)
        assert sock.recv(64) == b"datagram"
    with socket.create_connection(server.metrics_addr, timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: forkecho\r\n\r\n")
        assert sock.recv(64).startswith(b"HTTP/1.1 200 OK")

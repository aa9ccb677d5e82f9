"""No client can hold a worker: the event loop does every byte of client I/O.

Clients that do not read their downloads, or stall their uploads, cost a buffer (memory, then
an unlinked spool file), never the worker: with one worker, ordinary requests are answered at
once meanwhile, and every parked download or resumed upload comes out whole and in order.
These tests run one worker on purpose: any request the worker waits for would show.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from conftest import APPS, Server, base_env, bound_listener, prefork_command, wait_for
from httpclient import closed_by_peer, connect, read_response

sys.path.insert(0, str(APPS))
from buffering import pattern  # noqa: E402  (the app's own body generator)

APP = "buffering:app"
SIZE = 8 << 20          # a download big enough to fill the kernel's buffers several times over
STALLED = 3             # stalled clients per test: any one of them holding the worker would show
FAST = 1.0              # seconds an ordinary request may take meanwhile


@pytest.fixture
def close_log(tmp_path: Path) -> Path:
    return tmp_path / "closed.log"


def closed_events(close_log: Path) -> list[str]:
    return close_log.read_text().splitlines() if close_log.exists() else []


def slow_reader(port: int, path: str, host: str = "127.0.0.1") -> socket.socket:
    """A client that asks for ``path`` and then does not read (a small receive window, so
    most of the response must wait on the server's side)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((host, port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return sock


def timed_get(port: int, path: str = "/") -> float:
    """One ordinary request on a new connection; its duration."""
    start = time.monotonic()
    with connect(port) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        response = read_response(sock.makefile("rb"))
    assert response.status == 200
    return time.monotonic() - start


def ordinary_requests_are_fast(port: int, count: int = 10) -> None:
    durations = [timed_get(port) for _ in range(count)]
    assert max(durations) < FAST, durations


def worker_of(server) -> psutil.Process:
    (worker,) = server.workers()
    return worker


def spool_files(process: psutil.Process) -> list[int]:
    """Sizes of the unlinked temporary files the process holds open."""
    sizes = []
    for entry in Path(f"/proc/{process.pid}/fd").iterdir():
        try:
            target = os.readlink(entry)
            if target.endswith("(deleted)") or "#" in target:
                sizes.append(os.stat(entry).st_size)
        except OSError:
            continue
    return sizes


def open_fds(process: psutil.Process) -> int:
    return len(list(Path(f"/proc/{process.pid}/fd").iterdir()))


def send_upload_head(port: int, size: int, chunked: bool, first: bytes) -> socket.socket:
    sock = connect(port)
    if chunked:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + b"%x\r\n" % len(first) + first + b"\r\n")
    else:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size + first)
    return sock


def finish_upload(sock: socket.socket, rest: bytes, chunked: bool) -> dict:
    if chunked:
        sock.sendall(b"%x\r\n" % len(rest) + rest + b"\r\n0\r\n\r\n")
    else:
        sock.sendall(rest)
    response = read_response(sock.makefile("rb"))
    assert response.status == 200, response.body
    return json.loads(response.body)


# -- downloads ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["list", "gen", "chunked", "file"])
def test_unread_downloads_do_not_hold_the_worker_and_arrive_whole(start_server, close_log, kind):
    server = start_server(APP, workers=1, env={"WSGI_CLOSE_LOG": str(close_log)})
    (pid,) = server.worker_pids()
    readers = [slow_reader(server.port, f"/big?kind={kind}&size={SIZE}") for _ in range(STALLED)]
    if kind != "file":  # the app is done at once: its iterable is closed before anyone reads
        wait_for(lambda: closed_events(close_log) == [f"{kind} closed"] * STALLED, 10,
                 message="close() of every parked response's iterable")
    ordinary_requests_are_fast(server.port)
    for sock in readers:
        with sock:
            response = read_response(sock.makefile("rb"))
            assert response.status == 200 and response.chunked == (kind == "chunked")
            assert response.body == pattern(SIZE)
    # a file is closed when its last byte is out; every close() exactly once
    wait_for(lambda: closed_events(close_log) == [f"{kind} closed"] * STALLED, 10, message="close()")
    assert server.worker_pids() == {pid}


def test_pipelined_requests_are_answered_in_order_behind_a_parked_response(start_server):
    server = start_server(APP, workers=1)
    sock = slow_reader(server.port, f"/big?size={SIZE}")
    sock.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\nGET /big?size=1000&kind=chunked HTTP/1.1\r\nHost: t\r\n\r\n")
    ordinary_requests_are_fast(server.port)
    with sock:
        f = sock.makefile("rb")
        assert read_response(f).body == pattern(SIZE)
        assert read_response(f).body == str(server.worker_pids().pop()).encode()
        assert read_response(f).body == pattern(1000)


def test_a_client_gone_mid_response_costs_nothing(start_server, close_log):
    server = start_server(APP, "--log-level", "debug", workers=1, env={"WSGI_CLOSE_LOG": str(close_log)})
    worker = worker_of(server)
    before = open_fds(worker)
    for kind in ("list", "file"):
        sock = slow_reader(server.port, f"/big?kind={kind}&size={SIZE}")
        sock.recv(4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # a reset: the parked rest can never be delivered
    wait_for(lambda: closed_events(close_log) == ["list closed", "file closed"], 10, message="close()")
    server.wait_log("went away during the response")
    wait_for(lambda: open_fds(worker) <= before and not spool_files(worker), 10,
             message="the worker's fds back to where they were, no spool file left")
    ordinary_requests_are_fast(server.port, 3)


def test_an_endless_response_to_a_slow_client_never_spools_past_the_cap(start_server, close_log):
    """Past --response-spool-max the response streams: the app waits for the client, bounded
    by --body-timeout, so the disk never fills."""
    cap = 4 << 20
    server = start_server(APP, "--response-spool-max", str(cap), "--body-timeout", "2", workers=1,
                          env={"WSGI_CLOSE_LOG": str(close_log)})
    worker = worker_of(server)
    sock = slow_reader(server.port, "/endless")
    deadline = time.monotonic() + 3
    largest = 0
    while time.monotonic() < deadline:  # the client reads nothing for 3 s: spooling stops at the cap
        largest = max([largest, *spool_files(worker)])
        time.sleep(0.05)
    assert cap // 2 < largest <= cap
    sock.close()
    wait_for(lambda: closed_events(close_log) == ["endless closed"], 10, message="close() of the endless response")
    ordinary_requests_are_fast(server.port, 3)


def test_x_accel_buffering_no_streams_and_is_not_sent(start_server):
    server = start_server(APP, workers=1)
    with connect(server.port) as sock:
        sock.sendall(b"GET /endless?stream=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        f = sock.makefile("rb")
        head = read_response(f, head_only=True)
        assert head.status == 200 and head.header("X-Accel-Buffering") is None
        assert head.header("Transfer-Encoding") == "chunked"
        assert f.read(100000)
    worker = worker_of(server)
    wait_for(lambda: not spool_files(worker), 5, message="no spool file for a streamed response")


# -- uploads --------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_stalled_uploads_do_not_hold_the_worker_and_are_answered_once_resumed(start_server, chunked):
    server = start_server(APP, workers=1)
    body = os.urandom(1 << 20)
    uploads = [send_upload_head(server.port, len(body), chunked, body[:100_000]) for _ in range(STALLED)]
    ordinary_requests_are_fast(server.port)
    for sock in uploads:
        with sock:
            answer = finish_upload(sock, body[100_000:], chunked)
            assert answer == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                              "CONTENT_LENGTH": str(len(body)), "seekable": True}


def test_a_200_mib_upload_is_spooled_and_the_worker_stays_small(start_server):
    server = start_server(APP, workers=1)
    worker = worker_of(server)
    rss_before = worker.memory_info().rss
    size = 200 << 20
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    largest_rss = 0
    with connect(server.port, timeout=30) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
        for i in range(size // len(block)):
            sock.sendall(block)
            digest.update(block)
            if i % 20 == 0:
                largest_rss = max(largest_rss, worker.memory_info().rss)
        answer = json.loads(read_response(sock.makefile("rb")).body)
    assert answer["size"] == size and answer["sha256"] == digest.hexdigest()
    assert largest_rss - rss_before < 32 << 20, "the body went to a spool file, not memory"
    wait_for(lambda: not spool_files(worker), 5, message="the spool file closed after the request")


def test_a_body_over_the_limit_is_413_before_any_byte_is_stored(start_server):
    server = start_server(APP, "--limit-request-body", "1000", workers=1)
    with connect(server.port) as sock:  # Content-Length over the limit: refused by the head
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\nExpect: 100-continue\r\n\r\n")
        response = read_response(sock.makefile("rb"))
        assert response.status == 413, "no 100 Continue first"
    with connect(server.port) as sock:  # chunked: refused at the chunk that crosses it
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3e8\r\n" + b"a" * 1000 + b"\r\n1\r\n")
        response = read_response(sock.makefile("rb"))
        assert response.status == 413 and closed_by_peer(sock)
    with connect(server.port) as sock:  # at the limit: fine
        assert finish_upload(send_upload_head(server.port, 1000, False, b"a" * 1000), b"", False)["size"] == 1000


def test_expect_100_continue_is_sent_when_the_loop_starts_reading(start_server):
    server = start_server(APP, workers=1)
    with connect(server.port) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        f = sock.makefile("rb")
        assert read_response(f).status == 100
        sock.sendall(b"hello")
        assert json.loads(read_response(f).body)["size"] == 5
    with connect(server.port) as sock:  # the body came with the head: no 100 needed
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello")
        assert read_response(sock.makefile("rb")).status == 200


def test_a_client_gone_mid_upload_costs_nothing(start_server, close_log):
    server = start_server(APP, "--body-buffer-size", "1024", workers=1, env={"WSGI_CLOSE_LOG": str(close_log)})
    worker = worker_of(server)
    before = open_fds(worker)
    sock = send_upload_head(server.port, 10 << 20, False, os.urandom(1 << 20))
    wait_for(lambda: spool_files(worker), 5, message="the upload spooled")
    sock.close()
    wait_for(lambda: open_fds(worker) <= before and not spool_files(worker), 10,
             message="the spool file and the socket closed")
    assert closed_events(close_log) == [], "the app never ran for an incomplete body"
    ordinary_requests_are_fast(server.port, 3)


# -- lifecycle ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_parked_responses_are_flushed_by_a_retiring_worker(start_server, sig):
    server = start_server(APP, workers=1)
    (pid,) = server.worker_pids()
    readers = [slow_reader(server.port, f"/big?size={SIZE}") for _ in range(2)]
    time.sleep(0.2)  # let the app run: a retiring worker finishes APP work it has, not new ones
    server.signal(sig)
    if sig == signal.SIGHUP:
        wait_for(lambda: len(server.worker_pids() - {pid}) == 1, 20, message="the new generation")
        ordinary_requests_are_fast(server.port, 3)
    for sock in readers:
        with sock:
            assert read_response(sock.makefile("rb")).body == pattern(SIZE)
    wait_for(lambda: pid not in server.worker_pids(), 10, message="the old worker to exit once flushed")
    if sig == signal.SIGTERM:
        assert server.wait_exit() == 0


# -- every way in ---------------------------------------------------------------------------------

def test_threads_unix_socket_and_tls_park_responses_too(start_server, tmp_path):
    server = start_server(APP, "--threads", "2", workers=1)
    readers = [slow_reader(server.port, f"/big?size={SIZE}&kind=gen") for _ in range(STALLED)]
    ordinary_requests_are_fast(server.port)
    for sock in readers:
        with sock:
            assert read_response(sock.makefile("rb")).body == pattern(SIZE)
    body = os.urandom(300_000)
    with send_upload_head(server.port, len(body), True, body[:1000]) as sock:
        ordinary_requests_are_fast(server.port, 3)
        assert finish_upload(sock, body[1000:], True)["sha256"] == hashlib.sha256(body).hexdigest()


def parked_responses_do_not_hold_the_worker(open_connection: Callable[[], socket.socket],
                                            kinds: tuple[str, ...] = ("list",) * STALLED) -> None:
    """Over connections made by ``open_connection``: downloads nobody reads, ordinary requests
    answered at once meanwhile, then every download read whole."""
    readers = []
    for kind in kinds:
        sock = open_connection()
        sock.sendall(f"GET /big?size={SIZE}&kind={kind} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        readers.append(sock)
    for _ in range(5):
        start = time.monotonic()
        with open_connection() as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert read_response(sock.makefile("rb")).body == b"hello\n"
        assert time.monotonic() - start < FAST
    for sock in readers:
        with sock:
            assert read_response(sock.makefile("rb")).body == pattern(SIZE)


def test_a_unix_socket_parks_responses(start_server, tmp_path):
    path = str(tmp_path / "p.sock")
    start_server(APP, "-b", f"unix:{path}", workers=1, bind=False, probe="")
    wait_for(lambda: os.path.exists(path), 10, message="the unix socket")

    def unix_connect() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(path)
        return sock

    parked_responses_do_not_hold_the_worker(unix_connect)


def test_tls_parks_responses(start_server, tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("needs openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert), "-days", "1"], check=True, capture_output=True)
    server = start_server(APP, "--certfile", str(cert), "--keyfile", str(key), workers=1, probe="")
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False

    def tls_connect() -> ssl.SSLSocket:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(10)
        raw.connect(("127.0.0.1", server.port))
        return context.wrap_socket(raw, server_hostname="localhost")

    parked_responses_do_not_hold_the_worker(tls_connect, ("list", "file", "gen"))


# -- running out of file descriptors ---------------------------------------------------------------

@pytest.mark.parametrize("cap", ["auto", "1000"], ids=["cap-from-the-limit", "cap-above-the-limit"])
def test_the_fd_limit_is_reached_and_left_without_spinning_or_flooding_the_log(tmp_path, cap):
    """At RLIMIT_NOFILE 64 with 120 connections open the worker stays idle, logs a handful
    of lines, and serves again as soon as connections close: by its own cap (auto), or by
    backing off when accept() fails with EMFILE (a cap above the limit)."""
    def low_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    listener = bound_listener()
    log_path = tmp_path / "lowfd.log"
    args = [] if cap == "auto" else ["--worker-connections", cap]
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(prefork_command("-w", "1", *args, APP), cwd=APPS,
                                env=base_env(PREFORK_FD=str(listener.fileno())),
                                pass_fds=(listener.fileno(),), stdout=log_file,
                                stderr=subprocess.STDOUT, preexec_fn=low_fd_limit)
    port = listener.getsockname()[1]
    socks = []
    try:
        wait_for(lambda: len(psutil.Process(proc.pid).children()) == 1, 20, message="a worker")
        wait_for(lambda: _answers(port), 20, message="the first response")
        worker = psutil.Process(proc.pid).children()[0]
        socks = [connect(port) for _ in range(120)]
        time.sleep(0.5)  # the worker takes what it can
        log_size = log_path.stat().st_size
        cpu_before = sum(worker.cpu_times()[:2])
        time.sleep(3)
        cpu = sum(worker.cpu_times()[:2]) - cpu_before
        new_lines = log_path.read_bytes()[log_size:].count(b"\n")
        assert cpu < 0.6, f"the worker spun: {cpu:.2f} s of CPU in 3 s"
        assert new_lines <= 20, log_path.read_text()[-2000:]
        for sock in socks:
            sock.close()
        start = time.monotonic()
        wait_for(lambda: _answers(port), 5, message="serving again")
        assert time.monotonic() - start < 2
        assert worker.is_running() and psutil.Process(proc.pid).children() == [worker]
    finally:
        for sock in socks:
            sock.close()
        proc.send_signal(signal.SIGQUIT)
        proc.wait(timeout=10)
        listener.close()


def _answers(port: int) -> bool:
    try:
        return timed_get(port) < FAST
    except OSError:
        return False


# -- spool files that cannot be had --------------------------------------------------------------

FD_LIMIT = 64


@pytest.fixture
def limited_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``limited_server({resource.RLIMIT_FSIZE: n}, *args)``: one worker under resource limits
    set before exec, as ``prlimit`` would (the workers inherit them). Python ignores SIGXFSZ, so
    under RLIMIT_FSIZE a spool write past it fails with EFBIG, as one to a full disk fails with
    ENOSPC; under RLIMIT_NOFILE a spool file cannot be opened once the connections took every fd."""
    servers: list[Server] = []

    def start(limits: dict[int, int], *args: str) -> Server:
        def apply() -> None:
            for which, value in limits.items():
                resource.setrlimit(which, (value, value))

        listener = bound_listener()
        log_path = tmp_path / f"limited-{len(servers)}.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(prefork_command("-w", "1", *args, APP), cwd=APPS,
                                    env=base_env(PREFORK_FD=str(listener.fileno())),
                                    pass_fds=(listener.fileno(),), stdout=log_file,
                                    stderr=subprocess.STDOUT, preexec_fn=apply)
        server = Server(proc, listener.getsockname()[1], log_path, listener)
        servers.append(server)
        server.wait_workers(1)
        wait_for(lambda: _answers(server.port), 20, message="the first response")
        return server

    yield start
    for server in servers:
        server.stop()


def take_every_fd(server: Server) -> list[socket.socket]:
    """Connections with half a head, until the worker holds FD_LIMIT fds (it then stops
    accepting for a moment: the rest wait in the backlog)."""
    worker = worker_of(server)
    socks = []
    for _ in range(FD_LIMIT + 16):
        sock = connect(server.port)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
        socks.append(sock)
    wait_for(lambda: open_fds(worker) >= FD_LIMIT, 10, message="the worker out of fds")
    return socks


def spool_warnings(server: Server) -> list[str]:
    return [line for line in server.log().splitlines() if "cannot spool" in line]


def keep_alive_client(server: Server, receive_buffer: int = 0) -> socket.socket:
    """A keep-alive connection with one request answered (so the worker holds it already):
    the worker's other client. ``receive_buffer``: a small one makes a slow reader."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(sock.makefile("rb")).body == b"hello\n"
    return sock


def still_served(server: Server, pid: int, sock: socket.socket) -> None:
    """The worker lived through it, and its other client's connection with it."""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(sock.makefile("rb")).body == b"hello\n"
    assert server.worker_pids() == {pid}
    log = server.log()
    assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]


@pytest.mark.parametrize("threads", [(), ("--threads", "2")], ids=["loop", "threads"])
def test_an_upload_that_fills_the_disk_gets_503_and_the_worker_goes_on(limited_server, threads):
    server = limited_server({resource.RLIMIT_FSIZE: 1 << 20}, *threads)
    (pid,) = server.worker_pids()
    other = keep_alive_client(server)
    for _ in range(3):  # a full disk fails every large upload: one warning, not one per upload
        with connect(server.port) as sock:
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (4 << 20))
            sock.sendall(os.urandom(4 << 20))  # the server reads on and discards: no reset
            response = read_response(sock.makefile("rb"))
            assert response.status == 503 and response.header("Connection") == "close"
            assert closed_by_peer(sock)
    (warning,) = spool_warnings(server)
    assert "WARNING" in warning and "File too large" in warning and "503" in warning
    still_served(server, pid, other)
    body = os.urandom(500_000)  # spooled, within the limit: each spool file is a new one
    with send_upload_head(server.port, len(body), False, b"") as sock:
        assert finish_upload(sock, body, False)["sha256"] == hashlib.sha256(body).hexdigest()


def test_an_upload_with_no_fd_left_for_its_spool_file_gets_503_and_the_worker_goes_on(limited_server):
    server = limited_server({resource.RLIMIT_NOFILE: FD_LIMIT}, "--worker-connections", "1000")
    (pid,) = server.worker_pids()
    upload = send_upload_head(server.port, 300_000, False, b"a" * 1000)  # in memory so far
    other = keep_alive_client(server)
    fillers = take_every_fd(server)
    try:
        upload.sendall(b"a" * 299_000)  # over --body-buffer-size: wants a spool file
        response = read_response(upload.makefile("rb"))
        assert response.status == 503 and response.header("Connection") == "close"
        (warning,) = spool_warnings(server)
        assert "Too many open files" in warning
        still_served(server, pid, other)
    finally:
        upload.close()
        for sock in fillers:
            sock.close()
    ordinary_requests_are_fast(server.port, 3)


@pytest.mark.parametrize("threads", [(), ("--threads", "2")], ids=["loop", "threads"])
def test_a_response_that_fills_the_disk_goes_on_synchronously_and_arrives_whole(limited_server, threads):
    server = limited_server({resource.RLIMIT_FSIZE: 1 << 20}, *threads)
    (pid,) = server.worker_pids()
    other = keep_alive_client(server)
    with slow_reader(server.port, f"/big?size={SIZE}&kind=gen") as sock:
        wait_for(lambda: spool_warnings(server), 10, message="the spool write to fail")
        response = read_response(sock.makefile("rb"))  # memory, then spool file, then the rest
        assert response.status == 200 and response.body == pattern(SIZE)
    (warning,) = spool_warnings(server)
    assert "File too large" in warning and "synchronously" in warning
    still_served(server, pid, other)


def test_a_response_with_no_fd_left_for_its_spool_file_goes_on_synchronously(limited_server):
    server = limited_server({resource.RLIMIT_NOFILE: FD_LIMIT}, "--worker-connections", "1000")
    (pid,) = server.worker_pids()
    reader = keep_alive_client(server, receive_buffer=4096)
    other = keep_alive_client(server)
    fillers = take_every_fd(server)
    try:
        with reader:
            reader.sendall(f"GET /big?size={SIZE} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            wait_for(lambda: spool_warnings(server), 10, message="the spool file to fail")
            response = read_response(reader.makefile("rb"))
            assert response.status == 200 and response.body == pattern(SIZE)
        (warning,) = spool_warnings(server)
        assert "Too many open files" in warning
        still_served(server, pid, other)
    finally:
        for sock in fillers:
            sock.close()


# -- what an operator sees ------------------------------------------------------------------------

def test_prefork_status_shows_connections_by_state_and_bytes_buffered(start_server, tmp_path):
    path = tmp_path / "ctl.sock"
    server = start_server(APP, "--control-socket", str(path), workers=1)
    readers = [slow_reader(server.port, f"/big?size={SIZE}") for _ in range(2)]
    upload = send_upload_head(server.port, 1 << 20, False, b"u" * 300_000)
    idle = connect(server.port)

    def gauges() -> dict:
        result = subprocess.run(prefork_command("status", "--json", "--control-socket", str(path)),
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        (worker,) = json.loads(result.stdout)["workers"]
        return worker

    def settled() -> dict | None:
        worker = gauges()
        connections = worker["connections"]
        if connections["write"] == 2 and connections["body"] == 1 and connections["head"] + connections["idle"] >= 1:
            return worker
        return None

    worker = wait_for(settled, 10, interval=0.3, message="the gauges to show 2 WRITE, 1 BODY")
    assert worker["buffered"] >= 300_000 + 2 * (SIZE // 4)  # the upload so far, the parked rest
    text = subprocess.run(prefork_command("status", "--control-socket", str(path)),
                          capture_output=True, text=True, timeout=30).stdout
    assert "H/B/W/IDLE/CL" in text and "BUFFERED" in text
    for sock in (*readers, upload, idle):
        sock.close()


def test_the_access_log_sees_each_request_once_with_the_bytes_that_left(start_server, tmp_path):
    access = tmp_path / "access.log"
    server = start_server(APP, "--access-logfile", str(access), "--access-logformat",
                          "%(U)s %(s)s %(B)s %(D)s", workers=1)
    whole = slow_reader(server.port, f"/big?size={SIZE}")
    cut = slow_reader(server.port, f"/big?size={SIZE}&kind=file")
    cut.recv(4096)
    cut.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    cut.close()
    time.sleep(0.5)  # the whole one stays unread a while: its duration runs to the last byte
    with whole:
        assert read_response(whole.makefile("rb")).body == pattern(SIZE)

    def big_lines() -> list[list[str]]:
        return [line.split() for line in access.read_text().splitlines() if line.startswith("/big")]

    wait_for(lambda: len(big_lines()) == 2, 10, message="two access lines for /big")
    lines = big_lines()
    sizes = sorted(int(line[2]) for line in lines)
    assert sizes[0] < SIZE // 2, "the cut-short response logs the bytes that left, not its length"
    assert sizes[1] == SIZE
    durations = {int(line[2]): int(line[3]) for line in lines}
    assert durations[SIZE] >= 500_000, "to the last byte, not to the app's return"


def test_the_arbiter_raises_the_soft_open_file_limit_to_the_hard_one(tmp_path):
    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096))

    listener = bound_listener()
    with open(tmp_path / "prefork.log", "wb") as log_file:
        proc = subprocess.Popen(prefork_command("-w", "1", APP), cwd=APPS,
                                env=base_env(PREFORK_FD=str(listener.fileno())),
                                pass_fds=(listener.fileno(),), stdout=log_file,
                                stderr=subprocess.STDOUT, preexec_fn=low_soft_limit)
    try:
        wait_for(lambda: len(psutil.Process(proc.pid).children()) == 1, 20, message="a worker")
        worker = psutil.Process(proc.pid).children()[0]
        assert worker.rlimit(psutil.RLIMIT_NOFILE) == (4096, 4096)
        assert psutil.Process(proc.pid).rlimit(psutil.RLIMIT_NOFILE) == (4096, 4096)
    finally:
        proc.send_signal(signal.SIGQUIT)
        proc.wait(timeout=10)
        listener.close()

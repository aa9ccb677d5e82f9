"""Real clients against ``prefork -w 2 basic:app``: requests (keep-alive sessions, pooled
connections from threads), curl (HTTP/1.0 and 1.1, uploads with Content-Length, chunked and
Expect: 100-continue) and a short wrk run that must see no error at all.

curl and wrk are external programs; a test that needs one is skipped, saying which, when it is
not installed (CI installs both).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from requests.adapters import HTTPAdapter

from conftest import APPS, START_TIMEOUT, Server, base_env, prefork_command, wait_for

CURL = shutil.which("curl")
WRK = shutil.which("wrk")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed (apt-get install curl)")
needs_wrk = pytest.mark.skipif(WRK is None, reason="wrk is not installed (apt-get install wrk)")
CLIENT_TIMEOUT = 60
POOL_SIZE = 4
UPLOAD_SIZE = 5 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One prefork for the module, on a socket bound here (conftest's PREFORK_FD approach)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    listener.set_inheritable(True)
    log_path = tmp_path_factory.mktemp("real-clients") / "prefork.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(prefork_command("-w", "2", "basic:app"), cwd=APPS,
                                env=base_env(PREFORK_FD=str(listener.fileno())),
                                pass_fds=(listener.fileno(),), stdout=log_file,
                                stderr=subprocess.STDOUT)
    server = Server(proc, listener.getsockname()[1], log_path, listener)
    try:
        server.wait_workers(2)
        wait_for(lambda: _answers(server), START_TIMEOUT, message="the first response")
        yield server
    finally:
        server.stop()


def _answers(server: Server) -> bool:
    if server.proc.poll() is not None:
        raise AssertionError(f"prefork exited with {server.proc.returncode}:\n{server.log()}")
    try:
        return server.get("/", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def upload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("upload") / "upload.bin"
    path.write_bytes(os.urandom(UPLOAD_SIZE))
    return path


# -- requests ---------------------------------------------------------------------------------

def test_requests_session_reuses_one_connection(server: Server) -> None:
    with requests.Session() as session:
        ports = {session.get(server.url + "/environ", timeout=10).json()["REMOTE_PORT"]
                 for _ in range(25)}
        body = os.urandom(256 << 10)
        for _ in range(5):  # bodies in both directions on the same connection
            assert session.post(server.url + "/echo", data=body, timeout=10).content == body
        ports.add(session.get(server.url + "/environ", timeout=10).json()["REMOTE_PORT"])
    assert len(ports) == 1


def test_requests_pooled_connections_from_threads(server: Server) -> None:
    with requests.Session() as session:
        session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=POOL_SIZE,
                                             pool_block=True))

        def client_port(i: int) -> str:
            response = session.get(f"{server.url}/environ?i={i}", timeout=10)
            response.raise_for_status()
            data = response.json()
            assert data["QUERY_STRING"] == f"i={i}"  # each thread got its own answer
            return data["REMOTE_PORT"]

        with ThreadPoolExecutor(POOL_SIZE) as pool:
            ports = list(pool.map(client_port, range(200)))
    assert len(ports) == 200
    assert 1 <= len(set(ports)) <= POOL_SIZE  # 200 requests over at most POOL_SIZE connections


# -- curl -------------------------------------------------------------------------------------

def curl(*args: str, stdin: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """curl -sS -v: the body on stdout, the exchange (> request, < response lines) on stderr."""
    with open(stdin or os.devnull, "rb") as source:
        result = subprocess.run([CURL, "-sS", "-v", "--max-time", str(CLIENT_TIMEOUT), *args],  # type: ignore[list-item]
                                stdin=source, capture_output=True, timeout=CLIENT_TIMEOUT + 5)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result


def sent_headers(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    return [line[2:] for line in result.stderr.decode("latin-1").splitlines()
            if line.startswith("> ")]


def received(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    return [line[2:] for line in result.stderr.decode("latin-1").splitlines()
            if line.startswith("< ")]


@needs_curl
def test_curl_http10_close_delimited_stream(server: Server) -> None:
    """An HTTP/1.0 client cannot take chunked: a body of unknown length ends with the close."""
    result = curl("--http1.0", server.url + "/stream?4")
    assert result.stdout == b"".join(b"chunk %d\n" % i for i in range(4))
    lines = received(result)
    assert lines[0].startswith("HTTP/1.1 200")
    assert "Connection: close" in lines
    assert not any(line.lower().startswith("transfer-encoding") for line in lines)


@needs_curl
@pytest.mark.parametrize("version", ["--http1.0", "--http1.1"])
def test_curl_keep_alive(server: Server, version: str) -> None:
    extra = ["-H", "Connection: keep-alive"] if version == "--http1.0" else []
    result = curl(version, *extra, server.url + "/", server.url + "/pid")
    assert result.stdout.startswith(b"Hello, world!\n")
    assert b"Re-using existing connection" in result.stderr


@needs_curl
@pytest.mark.parametrize(("args", "framing"), [
    (["--data-binary", "@{file}"], "Content-Length: 5242880"),
    (["-T", "{file}"], "Content-Length: 5242880"),
    (["-T", "-"], "Transfer-Encoding: chunked"),
    (["-H", "Transfer-Encoding: chunked", "-T", "{file}"], "Transfer-Encoding: chunked"),
], ids=["data-binary", "upload-file", "upload-stdin-chunked", "upload-file-forced-chunked"])
def test_curl_uploads(server: Server, upload: Path, args: list[str], framing: str) -> None:
    """/echo sends the body back: every byte arrived, whatever the framing; curl asks for
    100-continue on bodies this large, and gets it."""
    stdin = upload if "-" in args else None
    result = curl(*(arg.format(file=upload) for arg in args), server.url + "/echo", stdin=stdin)
    request_lines = sent_headers(result)
    assert framing in request_lines
    assert "Expect: 100-continue" in request_lines
    assert "HTTP/1.1 100 Continue" in received(result)
    assert hashlib.sha256(result.stdout).digest() == hashlib.sha256(upload.read_bytes()).digest()


# -- wrk --------------------------------------------------------------------------------------

@needs_wrk
def test_wrk_smoke_run_has_no_errors(server: Server) -> None:
    result = subprocess.run([WRK, "-t", "2", "-c", "16", "-d", "2s", server.url + "/"],  # type: ignore[list-item]
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    output = result.stdout
    assert "Socket errors" not in output, output
    assert "Non-2xx" not in output, output
    done = re.search(r"^\s*(\d+) requests in ", output, re.MULTILINE)
    assert done is not None and int(done.group(1)) > 0, output
    assert server.get("/").text == "Hello, world!\n"  # and the server is fine afterwards

"""The access log: gunicorn's atoms (a table over a made-up request), the JSON form, batched
writes, and a real prefork writing it — default format, headers, TERM, logrotate + USR1."""

from __future__ import annotations

import json
import os
import re
import select
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from conftest import wait_for
from prefork.config.settings import GUNICORN_ACCESS_FORMAT, ConfigError
from prefork.workers.accesslog import FLUSH_BYTES, AccessLog

CLF_TIME = r"\[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\]"
# gunicorn's default: %(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"
QUOTED = r'"((?:[^"\\]|\\.)*)"'  # a quoted field in which \" and \\ are escapes
COMBINED_RE = re.compile(rf"(\S+) - (\S+) {CLF_TIME} {QUOTED} (\d{{3}}) (\d+|-) {QUOTED} {QUOTED}")

ENVIRON = {
    "REMOTE_ADDR": "203.0.113.7", "REMOTE_PORT": "56324", "REQUEST_METHOD": "GET",
    "RAW_URI": "/a%20b?x=1", "PATH_INFO": "/a b", "QUERY_STRING": "x=1", "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_REFERER": "https://example.com/", "HTTP_USER_AGENT": 'agent "quoted"\\',
    "HTTP_AUTHORIZATION": "Basic YWxpY2U6c2VjcmV0",  # alice:secret
    "wsgi.url_scheme": "https",
}
HANDLER = SimpleNamespace(
    environ=ENVIRON, status_code=201, sent=1234,
    req=SimpleNamespace(headers=[("Host", "example.com"), ("X-Request-Id", "r-1"), ("x-request-id", "r-2")]),
    headers=[("Content-Type", "text/plain"), ("X-Served-By", "app\x01")])
DURATION = 1.0123456


def line(fmt: str, handler=HANDLER, duration: float = DURATION) -> str:
    return AccessLog("-", fmt, False).format_line(handler.environ, handler, duration)


@pytest.mark.parametrize("atom, expected", [
    ("h", "203.0.113.7"),
    ("l", "-"),
    ("u", "alice"),
    ("r", "GET /a%20b?x=1 HTTP/1.1"),
    ("m", "GET"),
    ("U", "/a b"),
    ("q", "x=1"),
    ("H", "HTTP/1.1"),
    ("s", "201"),
    ("B", "1234"),
    ("b", "1234"),
    ("f", "https://example.com/"),
    ("a", 'agent \\"quoted\\"\\\\'),      # " and \ escaped, as Apache does
    ("T", "1"),
    ("M", "1012"),
    ("D", "1012345"),
    ("L", "1.012346"),
    ("p", f"<{os.getpid()}>"),
    ("{x-request-id}i", "r-1, r-2"),     # case-insensitive, repeated fields joined
    ("{X-REQUEST-ID}i", "r-1, r-2"),
    ("{host}i", "example.com"),
    ("{x-served-by}o", "app\\x01"),      # control characters escaped
    ("{content-type}o", "text/plain"),
    ("{wsgi.url_scheme}e", "https"),
    ("{remote_port}e", "56324"),
    ("{no-such-header}i", "-"),
    ("{no-such-header}o", "-"),
    ("{NO_SUCH_KEY}e", "-"),
    ("unknown", "-"),
])
def test_atom(atom, expected):
    assert line(f"%({atom})s") == expected + "\n"


def test_time_atom_is_clf():
    assert re.fullmatch(CLF_TIME + "\n", line("%(t)s"))


@pytest.mark.parametrize("fmt, expected", [
    ("%(b)s", "0"),        # gunicorn's str(resp.sent), not CLF's "-"
    ("%(B)s", "0"),
    ("%(u)s", "-"),        # no credentials
])
def test_atoms_for_an_empty_anonymous_response(fmt, expected):
    environ = {**ENVIRON, "HTTP_AUTHORIZATION": "Bearer abc"}
    handler = SimpleNamespace(**{**vars(HANDLER), "environ": environ, "sent": 0})
    assert line(fmt, handler) == expected + "\n"


def test_default_format_is_gunicorns_combined_format():
    match = COMBINED_RE.fullmatch(line(GUNICORN_ACCESS_FORMAT).rstrip("\n"))
    assert match is not None
    assert match.groups() == ("203.0.113.7", "alice", "GET /a%20b?x=1 HTTP/1.1", "201", "1234",
                              "https://example.com/", 'agent \\"quoted\\"\\\\')


def test_json_line_has_the_formats_fields_named_and_typed():
    fmt = (GUNICORN_ACCESS_FORMAT
           + " %(D)s %(L)s %(p)s %({X-Request-Id}i)s %({x-served-by}o)s %({REMOTE_PORT}e)s")
    record = json.loads(AccessLog("-", fmt, True).format_line(ENVIRON, HANDLER, DURATION))
    assert record.pop("time").startswith(("20", "19"))
    assert record == {
        "remote_addr": "203.0.113.7", "ident": None, "user": "alice",
        "request": "GET /a%20b?x=1 HTTP/1.1", "status": 201, "bytes": 1234,
        "referer": "https://example.com/", "user_agent": 'agent "quoted"\\',
        "request_time_us": 1012345, "request_time": 1.012346, "pid": os.getpid(),
        "request_headers": {"X-Request-Id": "r-1, r-2"},
        "response_headers": {"x-served-by": "app\x01"},
        "environ": {"REMOTE_PORT": "56324"},
    }


@pytest.mark.parametrize("fmt", ["%(h)d", "%(h)", "%(s)s %"])
def test_bad_format_is_a_config_error(fmt):
    with pytest.raises(ConfigError, match="--access-logformat"):
        AccessLog("-", fmt, False).check_format()


def test_lines_are_written_in_batches(tmp_path):
    """No write per request: lines wait in memory until flush() (the worker's tick), then all
    arrive, in order, in one go."""
    path = tmp_path / "access.log"
    access_log = AccessLog(str(path), "%(r)s %(s)s", False)
    for _ in range(100):
        access_log.log(HANDLER, 0.001)
    assert path.read_text() == ""
    access_log.flush()
    assert path.read_text() == "GET /a%20b?x=1 HTTP/1.1 201\n" * 100
    access_log.close()


def test_a_full_buffer_is_written_without_waiting_for_the_tick(tmp_path):
    path = tmp_path / "access.log"
    access_log = AccessLog(str(path), "%(r)s" + "x" * 1000, False)
    for _ in range(100):  # ~100 KiB, more than one batch
        access_log.log(HANDLER, 0.001)
    assert path.stat().st_size > 0
    access_log.close()
    assert path.read_text().count("\n") == 100


def test_pipe_writes_hold_whole_lines_within_pipe_buf(tmp_path):
    """On a pipe each write carries whole lines and at most PIPE_BUF bytes (which the kernel
    keeps atomic), so lines from several workers sharing stdout never interleave. A regular
    file opened with O_APPEND takes a batch in one write."""
    read_fd, write_fd = os.pipe()
    try:
        access_log = AccessLog("-", "%(r)s " + "y" * 300, False)
        access_log.fd = write_fd
        access_log.chunk = access_log._chunk_size()
        assert access_log.chunk == select.PIPE_BUF
        writes: list[str] = []
        access_log._write = writes.append
        for _ in range(40):
            access_log.log(HANDLER, 0.001)
        access_log.flush()
        assert len(writes) > 1
        assert all(len(w) <= select.PIPE_BUF and w.endswith("\n") for w in writes)
        assert "".join(writes).count("\n") == 40
    finally:
        os.close(read_fd)
        os.close(write_fd)
    file_log = AccessLog(str(tmp_path / "a.log"), "%(r)s", False)
    assert file_log.chunk > FLUSH_BYTES
    file_log.close()


# -- a real prefork -------------------------------------------------------------------------------


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_default_format_line_from_a_request(start_server, tmp_path):
    path = tmp_path / "access.log"
    server = start_server("prod_app:app", "--access-logfile", str(path), workers=1)
    response = server.get("/whoami?x=1", headers={"User-Agent": "test-agent/1.0",
                                                  "Referer": "http://ref.example/"})
    assert response.status_code == 200
    expected = (f'"GET /whoami?x=1 HTTP/1.1" 200 {len(response.content)} '
                '"http://ref.example/" "test-agent/1.0"')
    found = wait_for(lambda: [l for l in lines_of(path) if "/whoami" in l], 3, message="the access log line")
    assert len(found) == 1
    assert COMBINED_RE.fullmatch(found[0])
    assert found[0].startswith("127.0.0.1 - - [") and found[0].endswith(expected)


def test_headers_in_and_out_and_json(start_server, tmp_path):
    path = tmp_path / "access.log"
    fmt = '%(h)s "%(r)s" %(s)s %(b)s %(D)s %({X-Request-Id}i)s %({X-Served-By}o)s'
    server = start_server("prod_app:app", "--access-logfile", str(path), "--access-log-json",
                          "--access-logformat", fmt, workers=1)
    response = server.get("/", headers={"X-Request-Id": "abc-123"})
    assert response.status_code == 200 and response.content == b"Hello, world!\n"
    records = wait_for(lambda: [json.loads(l) for l in lines_of(path) if '"abc-123"' in l], 3,
                       message="the JSON access log line")
    record = records[0]
    assert record["request"] == "GET / HTTP/1.1" and record["status"] == 200
    assert record["bytes"] == len(b"Hello, world!\n") and isinstance(record["request_time_us"], int)
    assert record["request_headers"] == {"X-Request-Id": "abc-123"}
    assert record["response_headers"] == {"X-Served-By": "prod-app"}
    # what the log says left is what the client got
    assert record["bytes"] == len(response.content)
    assert record["response_headers"] == {"X-Served-By": response.headers["X-Served-By"]}


def test_stdout_access_log(start_server):
    server = start_server("prod_app:app", "--access-logfile", "-", workers=1)
    response = server.get("/empty")
    assert response.status_code == 204 and response.content == b""
    server.wait_log('"GET /empty HTTP/1.1" 204 0', timeout=3)  # %(b)s: 0, as gunicorn writes it


def test_no_line_is_lost_on_term(start_server, tmp_path):
    path = tmp_path / "access.log"
    server = start_server("prod_app:app", "--access-logfile", str(path), "--access-logformat",
                          "%(U)s %(q)s", workers=2)
    with requests.Session() as session:
        for i in range(200):
            assert session.get(f"{server.url}/?{i}", timeout=10).status_code == 200
    server.signal(signal.SIGTERM)
    assert server.wait_exit(timeout=20) == 0
    queries = [l.split(" ", 1)[1] for l in lines_of(path)]
    assert sorted(int(q) for q in queries if q) == list(range(200))  # "" is the start-up probe


def test_logrotate_rename_then_usr1_moves_new_lines_to_a_new_file(start_server, tmp_path):
    path = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    server = start_server("prod_app:app", "--access-logfile", str(path), "--access-logformat",
                          "%(U)s %(q)s", workers=1)
    with requests.Session() as session:
        def served(query: str) -> bool:
            return session.get(f"{server.url}/?{query}", timeout=10).status_code == 200

        assert all(served(f"before-{i}") for i in range(50))
        os.rename(path, rotated)  # logrotate's "rotate" step: the worker still holds the file
        assert all(served(f"between-{i}") for i in range(50))
        server.signal(signal.SIGUSR1)  # logrotate's postrotate
        wait_for(path.exists, 5, message="the access log reopened by name")
        assert all(served(f"after-{i}") for i in range(50))
    wait_for(lambda: len(lines_of(path)) == 50, 3, message="50 lines in the new file")
    old = [l.split(" ", 1)[1] for l in lines_of(rotated)]
    new = [l.split(" ", 1)[1] for l in lines_of(path)]
    assert old == [""] + [f"before-{i}" for i in range(50)] + [f"between-{i}" for i in range(50)]
    assert new == [f"after-{i}" for i in range(50)]


def test_bad_access_log_settings_stop_prefork_at_start(start_server, tmp_path):
    server = start_server("prod_app:app", "--access-logfile", str(tmp_path / "no-such-dir" / "a.log"),
                          workers=1, wait=False)
    assert server.wait_exit(timeout=20) != 0
    assert "--access-logfile: cannot open" in server.log()

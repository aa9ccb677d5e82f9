"""prefork behind a real nginx, configured the way the docs recommend: a unix socket (or TCP),
upstream keep-alive, X-Forwarded-For / -Proto. What the client and the application see, and a
reload (HUP) under load that nginx must never turn into a 502 or 504.

Needs the nginx binary (Debian: nginx-light or nginx). nginx runs in the foreground with every
path (pid, logs, temp files) in the test's directory; under root its workers stay root
(``user root``), since the default ``nobody`` cannot enter pytest's private tmp directories.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from conftest import free_port, wait_for
from httpclient import read_response

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                       if os.access(p, os.X_OK)), None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="needs the nginx binary (apt install nginx-light)")

#: Client address for requests sent to nginx, so that "the client" differs from nginx itself
#: (127.0.0.1) in what prefork reports. Any 127/8 address is local on Linux.
CLIENT_ADDR = "127.0.0.2"

#: The main context of every test nginx: foreground, every path in the test's directory.
NGINX_MAIN = """
daemon off;
worker_processes 1;
{user}
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 512; }}
"""

NGINX_CONF = NGINX_MAIN + """
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    {other_temp_paths}
    upstream prefork {{
        server {upstream};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://prefork;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""


def _other_temp_paths(directory: Path) -> str:
    """Temp paths of the modules this nginx was built with (nginx-light lacks some); left at
    their defaults they point into /var/lib/nginx."""
    built = subprocess.run([NGINX, "-V"], capture_output=True, text=True, timeout=10).stderr
    return "\n    ".join(f"{module}_temp_path {directory}/{module};"
                         for module in ("fastcgi", "uwsgi", "scgi")
                         if f"--without-http_{module}_module" not in built)


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[str], int]]:
    """``nginx("unix:/path.sock")`` starts nginx in front of that upstream; returns its port."""
    procs: list[subprocess.Popen] = []

    def start(upstream: str) -> int:
        directory = tmp_path / f"nginx-{len(procs)}"
        directory.mkdir()
        port = free_port()
        conf = directory / "nginx.conf"
        conf.write_text(NGINX_CONF.format(
            dir=directory, port=port, upstream=upstream, other_temp_paths=_other_temp_paths(directory),
            user="user root;" if os.geteuid() == 0 else ""))
        command = [NGINX, "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        procs.append(proc)
        wait_for(lambda: _listening(proc, port, directory), 15, message="nginx listening")
        return port

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _listening(proc: subprocess.Popen, port: int, directory: Path) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"nginx exited with {proc.returncode}:\n"
                             f"{(directory / 'error.log').read_text(errors='replace')}")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def whoami(port: int) -> dict:
    """GET /whoami through nginx from CLIENT_ADDR; the app's view of the client."""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(CLIENT_ADDR, 0)) as sock:
        sock.sendall(b"GET /whoami HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n")
        response = read_response(sock.makefile("rb"))
    assert response.status == 200, response
    return json.loads(response.body)


def start_behind_unix_socket(start_server, tmp_path: Path, *args: str, workers: int = 2):
    path = tmp_path / "prefork.sock"
    server = start_server("prod_app:app", "-b", f"unix:{path}", *args, workers=workers, bind=False)
    wait_for(path.exists, 10, message="the unix socket")
    return server, f"unix:{path}"


def test_requests_come_through_nginx_and_the_client_address_via_unix_socket(start_server, nginx, tmp_path):
    """A unix-socket peer is trusted, so the X-Forwarded-For nginx sets is believed, even with
    --forwarded-allow-ips naming some other host."""
    server, upstream = start_behind_unix_socket(start_server, tmp_path, "--forwarded-allow-ips", "10.9.9.9")
    port = nginx(upstream)
    response = requests.get(f"http://127.0.0.1:{port}/", timeout=10)
    assert response.status_code == 200 and response.text == "Hello, world!\n"
    assert response.headers["X-Served-By"] == "prod-app"
    seen = whoami(port)
    assert seen["REMOTE_ADDR"] == CLIENT_ADDR
    assert seen["wsgi.url_scheme"] == "http"


@pytest.mark.parametrize("allow, expected_remote", [
    ("10.9.9.9", "127.0.0.1"),     # nginx not trusted: X-Forwarded-For ignored, the peer is nginx
    ("127.0.0.1", CLIENT_ADDR),    # nginx trusted: the client nginx saw
])
def test_forwarded_for_over_tcp_counts_only_from_trusted_proxies(start_server, nginx, allow, expected_remote):
    server = start_server("prod_app:app", "--forwarded-allow-ips", allow, workers=1)
    port = nginx(f"127.0.0.1:{server.port}")
    seen = whoami(port)
    assert seen["HTTP_X_FORWARDED_FOR"] == CLIENT_ADDR  # nginx did send it
    assert seen["REMOTE_ADDR"] == expected_remote


def test_hup_under_load_through_nginx_gives_no_502_or_504(start_server, nginx, tmp_path):
    """Clients keep nginx busy (nginx reuses its upstream connections) while prefork reloads:
    every response must be a 200 — a 502/504 would mean a worker dropped a request or closed
    a connection nginx had just sent a request on."""
    server, upstream = start_behind_unix_socket(start_server, tmp_path, workers=2)
    port = nginx(upstream)
    old_pids = server.worker_pids()
    statuses: collections.Counter = collections.Counter()
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + 3.0

    def client(number: int) -> None:
        with requests.Session() as session:
            for i in range(10_000):  # bounded by count and by time
                if time.monotonic() >= stop_at:
                    return
                path = "/slow?0.02" if (number + i) % 4 == 0 else "/"
                try:
                    status = session.get(f"http://127.0.0.1:{port}{path}", timeout=10).status_code
                except requests.RequestException as exc:
                    with lock:
                        errors.append(repr(exc))
                    continue
                with lock:
                    statuses[status] += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.8)
    server.signal(signal.SIGHUP)
    for thread in threads:
        thread.join(timeout=20)
    assert not any(thread.is_alive() for thread in threads)
    wait_for(lambda: len(server.worker_pids()) == 2 and not server.worker_pids() & old_pids, 15,
             message="the new generation alone")
    assert errors == []
    assert set(statuses) == {200}, dict(statuses)
    assert statuses[200] > 50

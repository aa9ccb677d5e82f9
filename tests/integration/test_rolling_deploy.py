"""A rolling replacement behind a real nginx loses no request: the old replica gets TERM with
--shutdown-delay while a client keeps sending, the new one serves on.

Two ways the load balancer learns of the stop, one test each:

* ``endpoint removed`` — Kubernetes: the replica is taken out of the upstream list a moment
  *after* TERM (here: nginx reloads a config without it, one second into the delay). nginx
  retries nothing here (``proxy_next_upstream off``, as for a POST it already sent), so a
  replica that stopped accepting at TERM would cost 502s: the delay is what saves them;
* ``passive checks`` — N hosts behind nginx with ``max_fails``: nothing tells nginx; once the
  old replica stops accepting, a refused connect is retried on the other server
  (``proxy_next_upstream error``) and the server is marked failed.

Either way every response the client sees is a 200. Needs the nginx binary.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import free_port, wait_for
from test_nginx import NGINX, NGINX_MAIN, _listening, _other_temp_paths

pytestmark = pytest.mark.skipif(NGINX is None, reason="needs the nginx binary (apt install nginx-light)")

DELAY = 2.0

NGINX_CONF = NGINX_MAIN + """
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    {other_temp_paths}
    upstream app {{
        {servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream {next_upstream};
        }}
    }}
}}
"""


class Nginx:
    def __init__(self, directory: Path, ports: list[int], next_upstream: str) -> None:
        self.directory = directory
        self.next_upstream = next_upstream
        self.port = free_port()
        self.conf = directory / "nginx.conf"
        self.write(ports)
        self.proc = subprocess.Popen([NGINX, "-p", str(directory), "-c", str(self.conf),
                                      "-e", str(directory / "error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_for(lambda: _listening(self.proc, self.port, directory), 15, message="nginx listening")

    def write(self, ports: list[int]) -> None:
        servers = "\n        ".join(f"server 127.0.0.1:{port} max_fails=1 fail_timeout=10s;" for port in ports)
        self.conf.write_text(NGINX_CONF.format(
            dir=self.directory, port=self.port, servers=servers, next_upstream=self.next_upstream,
            other_temp_paths=_other_temp_paths(self.directory),
            user="user root;" if os.geteuid() == 0 else ""))

    def reload(self, ports: list[int]) -> None:
        """What an ingress controller does when the endpoints change."""
        self.write(ports)
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.mark.parametrize("endpoint_removed", [True, False], ids=["endpoint removed", "passive checks"])
def test_rolling_replacement_behind_nginx_loses_no_request(start_server, tmp_path, endpoint_removed):
    old = start_server("basic:app", "--shutdown-delay", str(DELAY), "--health-path", "/healthz", workers=2)
    new = start_server("basic:app", "--health-path", "/healthz", workers=2)
    old.listener.close()  # prefork alone holds it now: after the drain, connects are refused
    old_pids, new_pids = old.worker_pids(), new.worker_pids()
    nginx = Nginx(tmp_path, [old.port, new.port], "off" if endpoint_removed else "error timeout")
    served: collections.Counter = collections.Counter()
    served_after_term: collections.Counter = collections.Counter()
    errors: list[str] = []
    term_sent = threading.Event()
    done = threading.Event()

    def client() -> None:
        # A new connection to nginx per request: reloading nginx closes its old workers' idle
        # client connections, a race between nginx and the client that is not prefork's.
        # nginx's own connections to prefork are kept alive (upstream keepalive).
        for _ in range(100_000):  # bounded by count and by the done event
            if done.is_set():
                return
            try:
                response = requests.get(f"http://127.0.0.1:{nginx.port}/pid", timeout=10)
            except requests.RequestException as exc:
                errors.append(repr(exc))
                continue
            if response.status_code != 200:
                errors.append(f"{response.status_code} {response.text[:80]!r}")
                continue
            pid = int(response.text)
            who = "old" if pid in old_pids else "new" if pid in new_pids else "?"
            served[who] += 1
            if term_sent.is_set():
                served_after_term[who] += 1

    clients = [threading.Thread(target=client) for _ in range(3)]
    try:
        for thread in clients:
            thread.start()
        wait_for(lambda: served["old"] > 10 and served["new"] > 10, 15, message="both replicas serving")
        old.signal(signal.SIGTERM)
        term_sent.set()
        wait_for(lambda: requests.get(old.url + "/healthz", timeout=5).status_code == 503, 5,
                 message="the old replica's health path to say 503")
        if endpoint_removed:
            time.sleep(1.0)  # the ingress hears of the stop late: the point of the delay
            nginx.reload([new.port])
        assert old.wait_exit(DELAY + 20) == 0
        count = served["new"]
        wait_for(lambda: served["new"] > count + 20, 15, message="the new replica serving on")
    finally:
        done.set()
        for thread in clients:
            thread.join(timeout=20)
        nginx.stop()
    assert errors == []
    assert served_after_term["old"] > 0  # the old replica served new requests during the delay
    assert served["?"] == 0

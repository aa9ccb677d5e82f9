"""HTTPS served by prefork itself: what a TLS client sees, what slow or wrong clients cannot do
to the worker, client certificates, and the start-up errors for bad TLS settings.

The certificates come from the ``openssl`` command (a throw-away CA, a server certificate for
127.0.0.1/localhost, a client certificate), made once per module.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from conftest import wait_for
from httpclient import closed_by_peer, connect, read_response, upload_outcome
from prefork.config.cli import make_config
from prefork.config.settings import ConfigError
from prefork.workers.tls import make_context

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path
    other_key: Path
    encrypted_key: Path


def openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=30)


def issue(directory: Path, name: str, subject: str, extensions: str) -> None:
    (directory / f"{name}.ext").write_text(extensions)
    openssl(directory, "req", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
    openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    openssl(d, "req", "-x509", *EC_KEY, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=prefork test CA")
    issue(d, "server", "/CN=localhost",
          "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    issue(d, "client", "/CN=test client", "extendedKeyUsage=clientAuth\n")
    openssl(d, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "other.key")
    openssl(d, "ec", "-in", "server.key", "-aes256", "-passout", "pass:secret", "-out", "encrypted.key")
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key",
               d / "other.key", d / "encrypted.key")


def start_https(start_server, pki: Pki, *args: str, workers: int = 1):
    server = start_server("prod_app:app", "--certfile", str(pki.cert), "--keyfile", str(pki.key),
                          *args, workers=workers, probe="")
    url = f"https://127.0.0.1:{server.port}"
    wait_for(lambda: _answers(url, pki, args), 20, message="first HTTPS response")
    return server, url


def _answers(url: str, pki: Pki, args: tuple[str, ...]) -> bool:
    cert = (str(pki.client_cert), str(pki.client_key)) if "--cert-reqs" in args else None
    try:
        return requests.get(url + "/", verify=str(pki.ca), cert=cert, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def client_context(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    return context


# -- what a client sees ---------------------------------------------------------------------------


def test_https_request_is_served_with_https_scheme(start_server, pki):
    server, url = start_https(start_server, pki)
    response = requests.get(url + "/whoami", verify=str(pki.ca), timeout=10)
    assert response.status_code == 200
    assert response.json()["wsgi.url_scheme"] == "https"
    assert response.json()["REMOTE_ADDR"] == "127.0.0.1"


def test_an_upload_over_the_limit_reads_its_413_over_tls(start_server, pki):
    """The close after an early answer lingers over TLS too (workers/linger.py): Python's
    http.client, still sending its body, reads the 413 instead of failing with SSLEOFError."""
    server, _ = start_https(start_server, pki, "--limit-request-body", "1000000")
    outcomes = [upload_outcome(http.client.HTTPSConnection("127.0.0.1", server.port, timeout=10,
                                                           context=client_context(pki)), "/", 20_000_000)
                for _ in range(3)]
    assert outcomes == [413] * 3


def test_keep_alive_over_tls_reuses_one_connection(start_server, pki):
    server, url = start_https(start_server, pki)
    with requests.Session() as session:
        ports = {session.get(url + "/whoami", verify=str(pki.ca), timeout=10).json()["REMOTE_PORT"]
                 for _ in range(5)}
    assert len(ports) == 1


def test_bodies_over_tls_both_ways(start_server, pki):
    """A 1 MiB upload echoed back (the body arrives in many TLS records while the app reads),
    a chunked upload, a streamed response, and a file body (sendfile cannot encrypt)."""
    server, url = start_https(start_server, pki)
    payload = bytes(range(256)) * 4096
    response = requests.post(url + "/echo", data=payload, verify=str(pki.ca), timeout=10)
    assert response.status_code == 200 and response.content == payload
    parts = [b"first\n", b"x" * 100_000, b"last\n"]
    response = requests.post(url + "/echo", data=iter(parts), verify=str(pki.ca), timeout=10)
    assert response.content == b"".join(parts)
    response = requests.get(url + "/stream?50", verify=str(pki.ca), timeout=10)
    assert response.text == "".join(f"chunk {i}\n" for i in range(50))
    size = 300_001
    response = requests.get(url + f"/file?{size}", verify=str(pki.ca), timeout=10)
    assert response.status_code == 200
    assert response.content == (bytes(range(256)) * (size // 256 + 1))[:size]


def test_pipelined_requests_over_tls(start_server, pki):
    server, _ = start_https(start_server, pki)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        with client_context(pki).wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(b"GET /whoami HTTP/1.1\r\nHost: t\r\n\r\n" * 3)
            f = sock.makefile("rb")
            responses = [read_response(f) for _ in range(3)]
    assert [r.status for r in responses] == [200, 200, 200]


# -- what a slow or wrong client cannot do ---------------------------------------------------------


def test_clients_that_never_finish_a_handshake_do_not_block_others(start_server, pki):
    """One worker, 20 connections stuck before or inside the handshake: an HTTPS request from
    someone else is still answered at once (a blocking handshake would wait out each one)."""
    server, url = start_https(start_server, pki, "--head-timeout", "30")
    stuck = []
    try:
        for i in range(20):
            sock = connect(server.port)
            if i % 2:
                sock.sendall(b"\x16\x03\x01\x00")  # the first bytes of a ClientHello, then nothing
            stuck.append(sock)
        started = time.monotonic()
        response = requests.get(url + "/", verify=str(pki.ca), timeout=10)
        elapsed = time.monotonic() - started
    finally:
        for sock in stuck:
            sock.close()
    assert response.status_code == 200
    assert elapsed < 3.0, f"an HTTPS request waited {elapsed:.1f}s behind stalled handshakes"


def test_stalled_handshake_is_closed_at_the_head_timeout(start_server, pki):
    server, _ = start_https(start_server, pki, "--head-timeout", "1")
    with connect(server.port) as sock:
        started = time.monotonic()
        assert closed_by_peer(sock, timeout=6)
        assert time.monotonic() - started < 5


def test_plain_http_to_the_tls_port_is_closed_and_the_worker_survives(start_server, pki):
    server, url = start_https(start_server, pki)
    pids = server.worker_pids()
    with connect(server.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        sock.settimeout(5)
        try:
            data = sock.recv(4096)
        except ConnectionResetError:
            data = b""
        assert not data.startswith(b"HTTP/"), "no HTTP answer on a TLS port"
        assert closed_by_peer(sock)
    assert requests.get(url + "/", verify=str(pki.ca), timeout=10).status_code == 200
    assert server.worker_pids() == pids


def test_required_client_certificate(start_server, pki):
    server, url = start_https(start_server, pki, "--ca-certs", str(pki.ca), "--cert-reqs", "2")
    with pytest.raises(requests.exceptions.ConnectionError):  # SSLError is one
        requests.get(url + "/", verify=str(pki.ca), timeout=10)
    response = requests.get(url + "/", verify=str(pki.ca), timeout=10,
                            cert=(str(pki.client_cert), str(pki.client_key)))
    assert response.status_code == 200


def whoami_behind_proxy_header(port: int, pki: Pki) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n")
        with client_context(pki).wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(b"GET /whoami HTTP/1.1\r\nHost: t\r\n\r\n")
            response = read_response(sock.makefile("rb"))
    assert response.status == 200
    return json.loads(response.body)


def test_proxy_protocol_header_before_the_handshake(start_server, pki):
    server = start_server("prod_app:app", "--certfile", str(pki.cert), "--keyfile", str(pki.key),
                          "--proxy-protocol", workers=1, probe="")
    environ = wait_for(lambda: _try(whoami_behind_proxy_header, server.port, pki), 20,
                       message="first response behind a PROXY header")
    assert (environ["REMOTE_ADDR"], environ["wsgi.url_scheme"]) == ("203.0.113.7", "https")


def _try(function, *args):
    try:
        return function(*args)
    except OSError:
        return None


# -- settings -----------------------------------------------------------------------------------------


def test_context_is_tls12_or_newer_with_settings_applied(pki):
    cfg = make_config(certfile=str(pki.cert), keyfile=str(pki.key), ca_certs=str(pki.ca),
                      cert_reqs=1, ciphers="ECDHE+AESGCM")
    context = make_context(cfg)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_OPTIONAL
    assert {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"} <= {
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"}
    assert make_context(make_config()) is None


def test_certificate_file_may_hold_the_key_too(pki, tmp_path):
    combined = tmp_path / "combined.pem"
    combined.write_bytes(pki.cert.read_bytes() + pki.key.read_bytes())
    context = make_context(make_config(certfile=str(combined)))
    # The context really serves that certificate with that key: a handshake in memory.
    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _ in range(4))
    server = context.wrap_bio(server_in, server_out, server_side=True)
    client = client_context(pki).wrap_bio(client_in, client_out, server_hostname="localhost")
    for _ in range(10):
        for side in (client, server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
    client.do_handshake()  # raises unless the handshake completed and the chain verified
    served = ssl.DER_cert_to_PEM_cert(client.getpeercert(binary_form=True))
    assert ssl.PEM_cert_to_DER_cert(served) == ssl.PEM_cert_to_DER_cert(pki.cert.read_text())


@pytest.mark.parametrize("settings, message", [
    ({"certfile": "missing.pem"}, "--certfile: cannot read 'missing.pem': No such file or directory"),
    ({"certfile": "{key}"}, "--certfile: no PEM certificate in"),
    ({"certfile": "{cert}"}, "--keyfile: no usable PEM private key in"),
    ({"certfile": "{cert}", "keyfile": "{other_key}"}, "does not hold the key of the certificate"),
    ({"certfile": "{cert}", "keyfile": "{encrypted_key}"}, "is encrypted"),
    ({"certfile": "{cert}", "keyfile": "{key}", "ciphers": "NO-SUCH-CIPHER"}, "--ciphers: no cipher matches"),
    ({"certfile": "{cert}", "keyfile": "{key}", "cert_reqs": 2}, "--cert-reqs: 2 asks for client"),
    ({"certfile": "{cert}", "keyfile": "{key}", "ca_certs": "{key}", "cert_reqs": 2}, "--ca-certs: no CA"),
])
def test_bad_tls_settings_are_one_line_errors(pki, settings, message):
    paths = {"cert": pki.cert, "key": pki.key, "other_key": pki.other_key,
             "encrypted_key": pki.encrypted_key}
    settings = {k: v.format(**paths) if isinstance(v, str) else v for k, v in settings.items()}
    with pytest.raises(ConfigError) as info:
        make_context(make_config(**settings))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_key_stops_prefork_at_start_with_the_reason(start_server, pki):
    server = start_server("prod_app:app", "--certfile", str(pki.cert), "--keyfile", str(pki.other_key),
                          wait=False)
    assert server.wait_exit(timeout=20) != 0
    assert "does not hold the key of the certificate" in server.log()


# -- gunicorn's ssl_context hook ------------------------------------------------------------------


def _tls13_only_config(tmp_path: Path) -> Path:
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(
        "import ssl\n\n"
        "def ssl_context(conf, default_ssl_context_factory):\n"
        "    context = default_ssl_context_factory()\n"
        "    context.minimum_version = ssl.TLSVersion.TLSv1_3\n"
        "    return context\n")
    return config


def test_ssl_context_hook_shapes_the_served_context(start_server, pki, tmp_path):
    """gunicorn's documented example (TLS 1.3 only), unchanged: a TLS 1.3 client is served,
    a client that stops at TLS 1.2 fails its handshake."""
    server, url = start_https(start_server, pki, "-c", str(_tls13_only_config(tmp_path)))
    tls13 = client_context(pki)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
            tls13.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.version() == "TLSv1.3"
    tls12 = client_context(pki)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            tls12.wrap_socket(raw, server_hostname="localhost")
    assert requests.get(url + "/", verify=str(pki.ca), timeout=10).status_code == 200


def test_ssl_context_hook_must_return_a_context(pki):
    not_a_context = make_config(certfile=str(pki.cert), keyfile=str(pki.key),
                                ssl_context=lambda conf, factory: None)
    with pytest.raises(ConfigError, match="ssl_context: the hook returned NoneType, not an ssl.SSLContext"):
        make_context(not_a_context)
    raising = make_config(certfile=str(pki.cert), keyfile=str(pki.key),
                          ssl_context=lambda conf, factory: 1 / 0)
    with pytest.raises(ConfigError, match="ssl_context: the hook raised ZeroDivisionError"):
        make_context(raising)

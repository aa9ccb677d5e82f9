"""HTTPS: the TLS context built from the settings, and a Connection that speaks TLS.

``make_context(cfg)`` turns --certfile/--keyfile/--ca-certs/--cert-reqs/--ciphers into one
server ``ssl.SSLContext`` (TLS 1.2 or newer), or raises ConfigError with a one-line message
naming the setting. gunicorn's ``ssl_context(config, default_ssl_context_factory)`` hook gets
that context's factory and returns the context to use (the default returns it unchanged). Each worker builds its own context at start (a failure there is a boot
error, which stops prefork); calling it once in the arbiter before forking as well turns a
missing or mismatched key into that one line on the operator's terminal. (A context shared
through the fork would share its session-ticket key; ours are per worker, so a resumed session
that lands on another worker costs a full handshake — correct, only slower.)

``TLSConnection`` differs from a plain ``Connection`` in what the kernel cannot see:

* The handshake is driven by the worker's epoll loop (``handshake()`` says which readiness it
  waits for) so a client that connects and never sends a ClientHello costs a buffer, not the
  worker — the same rule as for a slow request head. The worker bounds it with the head timeout.
* OpenSSL may hold decrypted bytes that epoll cannot see; every read drains ``pending()``.
* A non-blocking SSL socket says "try again" with SSLWantReadError / SSLWantWriteError (not
  BlockingIOError), and either may come from a read or a write.
* ``sendmsg`` and ``sendfile`` bypass the encryption: scatter-gather becomes separate sends and
  ``sendfile`` becomes read + send.
"""

from __future__ import annotations

import os
import select
import ssl
from collections.abc import Sequence
from typing import Any, Final

from prefork.config.settings import Config, ConfigError

from .connection import RECV_SIZE, ClientDisconnected, Connection, IOPolicy

#: Read size for sending a file over TLS (sendfile cannot): one TLS record holds 16 KiB.
FILE_CHUNK: Final = 65536
ALPN_PROTOCOLS: Final = ["http/1.1"]


class _EncryptedKey(Exception):
    """Raised from the password callback: a key that needs a password cannot be loaded
    unattended (OpenSSL would otherwise prompt on the terminal)."""


def _no_password() -> str:
    raise _EncryptedKey


def make_context(cfg: Config) -> ssl.SSLContext | None:
    """The server context for cfg, as the ssl_context hook returns it; ``None`` when TLS is off
    (no --certfile). Raises ConfigError."""
    if not cfg.certfile:
        return None
    try:
        context = cfg.ssl_context(cfg, lambda: _settings_context(cfg))
    except ConfigError:
        raise  # the factory's own one-line message
    except Exception as exc:  # the user's hook: a one-line report, not a traceback
        raise ConfigError(f"ssl_context: the hook raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(context, ssl.SSLContext):
        raise ConfigError(f"ssl_context: the hook returned {type(context).__name__}, not an ssl.SSLContext")
    return context


def _settings_context(cfg: Config) -> ssl.SSLContext:
    """The context the TLS settings describe (gunicorn's default_ssl_context_factory)."""
    _readable("--certfile", cfg.certfile)
    if cfg.keyfile:
        _readable("--keyfile", cfg.keyfile)
    if cfg.ca_certs:
        _readable("--ca-certs", cfg.ca_certs)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Client-initiated renegotiation costs the server a handshake per request: refuse it.
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    try:
        context.load_cert_chain(cfg.certfile, cfg.keyfile, password=_no_password)
    except _EncryptedKey:
        raise ConfigError(f"--keyfile: the private key in {cfg.keyfile or cfg.certfile!r} is "
                          "encrypted; prefork needs it unencrypted") from None
    except ssl.SSLError as exc:
        raise ConfigError(_cert_chain_error(cfg, exc)) from None
    if cfg.ciphers:
        try:
            context.set_ciphers(cfg.ciphers)
        except ssl.SSLError:
            raise ConfigError(f"--ciphers: no cipher matches {cfg.ciphers!r}") from None
    if cfg.ca_certs:
        try:
            context.load_verify_locations(cfg.ca_certs)
        except ssl.SSLError as exc:
            raise ConfigError(f"--ca-certs: no CA certificate in {cfg.ca_certs!r} "
                              f"({exc.reason or exc})") from None
    elif cfg.cert_reqs != ssl.CERT_NONE:
        raise ConfigError(f"--cert-reqs: {cfg.cert_reqs} asks for client certificates; "
                          "give --ca-certs to check them against")
    context.verify_mode = ssl.VerifyMode(cfg.cert_reqs)
    return context


def _readable(flag: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{flag}: cannot read {path!r}: {exc.strerror}") from None


def _cert_chain_error(cfg: Config, exc: ssl.SSLError) -> str:
    """Which of the two files is wrong, in words: OpenSSL says only 'PEM lib'."""
    if exc.reason == "KEY_VALUES_MISMATCH":
        return (f"--keyfile: {cfg.keyfile or cfg.certfile!r} does not hold the key of the "
                f"certificate in {cfg.certfile!r}")
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cfg.certfile)
    except ssl.SSLError:
        return f"--certfile: no PEM certificate in {cfg.certfile!r}"
    where = repr(cfg.keyfile) if cfg.keyfile else f"{cfg.certfile!r} (give --keyfile)"
    return f"--keyfile: no usable PEM private key in {where}"


class TLSConnection(Connection):
    """A Connection over an ``SSLSocket`` wrapped with ``do_handshake_on_connect=False``."""

    __slots__ = ("established",)

    sock: ssl.SSLSocket

    def __init__(self, sock: ssl.SSLSocket, environ: dict[str, Any], remote_addr: str,
                 remote_port: str, trusted: bool, policy: IOPolicy, deadline: float) -> None:
        super().__init__(sock, environ, remote_addr, remote_port, trusted, policy, deadline)
        self.established = False

    def handshake(self) -> int:
        """Advance the handshake without blocking: 0 when it is done, else the epoll event
        (EPOLLIN / EPOLLOUT) to wait for. Raises ssl.SSLError / OSError when it fails."""
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            return select.EPOLLIN
        except ssl.SSLWantWriteError:
            return select.EPOLLOUT
        self.established = True
        return 0

    # -- sending -----------------------------------------------------------------------------
    # After a "want write", OpenSSL must be offered the same bytes again (it has kept the
    # records it built): a parked chunk stays the first one until it is sent whole, and a
    # file segment is re-read from the same offset.

    WOULD_BLOCK = (ssl.SSLWantWriteError, ssl.SSLWantReadError)
    FIN_FLAGS = 0  # SSLSocket.send takes no flags

    def _sendmsg(self, parts: Sequence[Any]) -> int:
        """No sendmsg on TLS: the first part only (encrypting copies anyway)."""
        return self._send_now(parts[0])

    def _send_chunks(self, parts: list[Any]) -> int:
        try:
            sent = self.sock.send(parts[0])
        except ssl.SSLWantWriteError:
            return -select.EPOLLOUT
        except ssl.SSLWantReadError:
            return -select.EPOLLIN
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from exc
        return sent if sent else -select.EPOLLOUT

    def _send_segment(self, item: list[int]) -> bool:
        """The kernel cannot encrypt, so a file goes out by read + send."""
        fileno, offset, count = item
        while count:
            data = os.pread(fileno, min(FILE_CHUNK, count), offset)
            if not data:
                raise ClientDisconnected("the file is shorter than the response says")
            if self._send_now(data) == 0:
                break
            offset += len(data)
            count -= len(data)
        item[1], item[2] = offset, count
        return not count

    # -- receiving ---------------------------------------------------------------------------

    def recv_available(self) -> bytes | None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return None
        except OSError:  # ssl.SSLError included: a broken record is the end of the connection
            return b""
        return self._drain(data)

    def _waits_for(self, exc: OSError) -> int:
        """OpenSSL may need to write (a renegotiation or key update) before it can read."""
        return select.POLLOUT if isinstance(exc, ssl.SSLWantWriteError) else select.POLLIN

    def _complete(self, data: bytes) -> bytes:
        return self._drain(data)

    def _drain(self, data: bytes) -> bytes:
        """Add what OpenSSL decrypted but did not hand over: epoll cannot see those bytes, so
        leaving them would stall a request whose last bytes are already here."""
        sock = self.sock
        pending = sock.pending()
        if not pending:
            return data
        parts = [data]
        while pending:
            try:
                more = sock.recv(pending)
            except OSError:  # want-read/-write included: the next read reports any failure
                break
            if not more:
                break
            parts.append(more)
            pending = sock.pending()
        return b"".join(parts)

    def close(self) -> None:
        """Send close_notify when the session is up (so a close-delimited body is known to be
        complete), without waiting for the client's; then close."""
        if self.established:
            try:
                self.sock.unwrap()
            except (OSError, ValueError):  # want-read for the peer's close_notify, or it is gone
                pass
        super().close()

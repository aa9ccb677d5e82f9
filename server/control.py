"""The control socket: `prefork status` and `prefork ctl` talk to the running arbiter here.

Why a socket beside the signals: a signal carries no answer. An operator (or a deploy script)
wants to know that a reload was taken, how many workers serve, which one is stuck in a request
and how big it has grown; the arbiter already knows all of it (its worker records plus the
scoreboard), so it answers directly.

Protocol: a unix stream socket, one JSON object per line in, one JSON line out::

    {"cmd": "status"}               -> {"ok": true, "pid": ..., "workers": [...], ...}
    {"cmd": "reload"}               -> {"ok": true, "signal": "HUP", "count": 1}
    {"cmd": "workers", "delta": 2}  -> {"ok": true, "signal": "TTIN", "count": 2}
    {"cmd": "stop"}                 -> {"ok": true, "signal": "TERM", "count": 1}
    anything else                   -> {"ok": false, "error": "..."}

``reload``, ``workers`` and ``stop`` enqueue the signal the operator would have sent, so exactly
the same arbiter code runs either way. Access control is the file mode: 0600, owner only (and
root), set through the umask so the socket is never wider, not even for an instant.

Where the socket lives (``--control-socket auto``, the default), first match wins:

1. ``$RUNTIME_DIRECTORY/control.sock`` — systemd's ``RuntimeDirectory=`` (the first one if
   several are listed);
2. ``PIDFILE.ctl`` beside ``--pid PIDFILE``;
3. ``/tmp/prefork-PID.ctl`` with the arbiter's pid.

``off`` disables it; any other value is the path. An arbiter takes the path over atomically
(bind to a temporary name, rename over it), as the pidfile is written; a USR2 successor does so
at the hand-over, when it starts serving, so the socket always reaches the serving arbiter; the
old one, on exit, removes the file only if it is still its own. A control socket that cannot
be opened is logged and the server runs without one: it is an operator convenience, never a
reason not to serve.

Everything runs in the arbiter's single-threaded loop: the listener and every client are
non-blocking fds in the loop's ``readers``; a client gets a bounded buffer and a short deadline.
:class:`SocketService` is that plumbing; the metrics endpoint (``metrics.py``) uses it too.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import signal
import socket
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from . import __version__

if TYPE_CHECKING:
    from .view import ServerView
    from .workerset import WorkerProcess

log = logging.getLogger("prefork.error")

AUTO: Final = "auto"
OFF: Final = "off"
RUNTIME_SOCKET_NAME: Final = "control.sock"
PIDFILE_SUFFIX: Final = ".ctl"
FALLBACK_DIR: Final = "/tmp"
FALLBACK_PREFIX: Final = "prefork-"
#: sizeof(sockaddr_un.sun_path) on Linux, minus the terminating NUL.
UNIX_PATH_MAX: Final = 107
#: Socket files are created 0777 & ~umask: this umask makes them 0600 from the start.
PRIVATE_UMASK: Final = 0o177

#: A request line longer than this is refused (and the connection closed): no command needs it.
MAX_LINE: Final = 64 * 1024
#: A client must finish its request (and read its answer) within this many seconds.
CLIENT_DEADLINE: Final = 5.0
#: Connections served at once; more are closed at accept, so no one can exhaust the arbiter's fds.
MAX_CLIENTS: Final = 16
LISTEN_BACKLOG: Final = 16
ACCEPT_BATCH: Final = 2 * LISTEN_BACKLOG
RECV_SIZE: Final = 16 * 1024
#: `workers` moves at most this many workers per command; bigger jumps belong in the config.
MAX_DELTA: Final = 64
#: CPU% is measured over at least this window, so back-to-back queries do not return noise.
CPU_WINDOW: Final = 1.0


# -- where the socket lives ------------------------------------------------------------------------

def fallback_path(pid: int, directory: str = FALLBACK_DIR) -> str:
    return os.path.join(directory, f"{FALLBACK_PREFIX}{pid}{PIDFILE_SUFFIX}")


def fallback_sockets(directory: str = FALLBACK_DIR) -> list[tuple[str, bool]]:
    """Our own prefork-PID.ctl sockets in ``directory``, each with whether its arbiter still
    runs: one killed with -9 could not remove its file, and the pid in the name says whose it
    was. The server sweeps the dead ones; the client talks to the live one."""
    found = []
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError:
        return []
    for entry in entries:
        name = entry.name
        pid_text = name.removeprefix(FALLBACK_PREFIX).removesuffix(PIDFILE_SUFFIX)
        if not (name.startswith(FALLBACK_PREFIX) and name.endswith(PIDFILE_SUFFIX) and pid_text.isdigit()):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if st.st_uid == os.getuid() and stat.S_ISSOCK(st.st_mode):
            found.append((entry.path, _pid_alive(int(pid_text))))
    return found


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def remove_stale_fallbacks(directory: str = FALLBACK_DIR) -> int:
    """Remove our fallback sockets whose arbiter is gone; returns how many."""
    stale = [path for path, alive in fallback_sockets(directory) if not alive]
    for path in stale:
        _unlink(path)
    return len(stale)


def socket_path(setting: str, environ: Mapping[str, str], pidfile: str | None, pid: int) -> str | None:
    """The control socket path for ``--control-socket`` = ``setting``, or None when it is off.
    See the module docstring for the ``auto`` rules."""
    if setting == OFF:
        return None
    if setting != AUTO:
        return os.path.abspath(setting)
    runtime = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        return os.path.join(os.path.abspath(runtime), RUNTIME_SOCKET_NAME)
    if pidfile:
        return os.path.abspath(pidfile) + PIDFILE_SUFFIX
    return fallback_path(pid)


def bind_private(path: str) -> socket.socket:
    """A listening unix socket at ``path``, mode 0600 from birth, replacing any socket there.

    Raises OSError (with a message an operator can act on) if the path is unusable.
    """
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, f".prefork-{os.getpid()}{PIDFILE_SUFFIX}.tmp")
    if len(os.fsencode(path)) > UNIX_PATH_MAX or len(os.fsencode(tmp)) > UNIX_PATH_MAX:
        raise OSError(errno.ENAMETOOLONG, f"path too long for a unix socket (max {UNIX_PATH_MAX} bytes)")
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise OSError(errno.EEXIST, "the path exists and is not a socket")
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _unlink(tmp)
        old_umask = os.umask(PRIVATE_UMASK)  # the arbiter is single-threaded: no one else sees it
        try:
            sock.bind(tmp)
        finally:
            os.umask(old_umask)
        sock.listen(LISTEN_BACKLOG)
        os.rename(tmp, path)  # atomic: the path never names nothing, or a socket that is not ready
    except OSError:
        sock.close()
        _unlink(tmp)
        raise
    return sock


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


# -- the non-blocking plumbing -----------------------------------------------------------------------

@dataclass(eq=False)
class Client:
    """One connection: what it sent, what we still owe it, and where it stands."""

    sock: socket.socket
    deadline: float
    buf: bytearray = field(default_factory=bytearray)
    out: bytearray = field(default_factory=bytearray)
    eof: bool = False       # the peer has shut down its sending side
    closing: bool = False   # no more requests: close once ``out`` is sent
    shut: bool = False      # our side is shut down; we only wait for the peer's EOF


class SocketService:
    """A listener served from the arbiter's loop, never blocking it.

    Readable fds call back through the loop's ``readers``; each client reads into a buffer that
    :meth:`received` (the subclass) parses and answers with :meth:`reply`. Answers are sent
    without blocking; what does not fit in the socket buffer goes out on the next loop turns.
    While an answer is pending the client is not read, so one that never reads cannot make the
    arbiter buffer without bound. Closing is "lingering": after the last answer we shut down our
    side and wait for the peer's EOF, so unread request bytes never turn our close into a reset
    that eats the answer.
    :meth:`tick`, once per loop turn, retries pending sends and drops clients past their deadline.
    """

    def __init__(self, readers: dict[int, Callable[[], None]]) -> None:
        self.readers = readers
        self.sock: socket.socket | None = None
        self.clients: dict[int, Client] = {}
        self.paused = False  # accept() failed (out of fds): stop watching until the next tick

    def received(self, client: Client) -> None:
        """Parse ``client.buf`` (``client.eof`` says whether more can come) and reply."""
        raise NotImplementedError

    def serve(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.readers[sock.fileno()] = self._accept

    def reply(self, client: Client, data: bytes, close: bool = False) -> None:
        client.out += data
        client.closing = client.closing or close
        client.deadline = time.monotonic() + CLIENT_DEADLINE

    def tick(self, now: float) -> None:
        if self.paused and self.sock is not None:
            self.paused = False
            self.readers[self.sock.fileno()] = self._accept
        for client in list(self.clients.values()):
            if now >= client.deadline:
                self._drop(client)
            else:
                self._flush(client)

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._drop(client)
        if self.sock is not None:
            self.readers.pop(self.sock.fileno(), None)
            self.sock.close()
            self.sock = None

    def close_after_fork(self) -> None:
        """In a forked worker: let go of our fds without touching the parent's state. A worker
        holding a client's fd would keep that connection open after the arbiter closed it."""
        for sock in [c.sock for c in self.clients.values()] + ([self.sock] if self.sock else []):
            os.close(sock.detach())
        self.clients = {}
        self.sock = None

    def _accept(self) -> None:
        """Take what the backlog holds (a bounded batch: the loop has other work)."""
        assert self.sock is not None
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: the listener would stay readable
                log.warning("control/metrics accept() failed: %s; pausing for a tick", exc)
                self.readers.pop(self.sock.fileno(), None)
                self.paused = True
                return
            if len(self.clients) >= MAX_CLIENTS:
                conn.close()
                continue
            conn.setblocking(False)
            client = Client(conn, time.monotonic() + CLIENT_DEADLINE)
            self.clients[conn.fileno()] = client
            self._watch(client, True)

    def _watch(self, client: Client, on: bool) -> None:
        fd = client.sock.fileno()
        if not on:
            self.readers.pop(fd, None)
        elif fd not in self.readers:
            self.readers[fd] = functools.partial(self._readable, client)

    def _readable(self, client: Client) -> None:
        try:
            data = client.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # ECONNRESET: nobody left to answer
            self._drop(client)
            return
        if not data:
            client.eof = True
            self._watch(client, False)  # EOF stays readable: stop watching
        if client.closing:  # answered already: discard what comes, finish the close
            self._flush(client)
            return
        client.buf += data
        self.received(client)
        if client.eof:
            client.closing = True
        self._flush(client)
        if client.out:  # a client that does not read its answers gets no more of them
            self._watch(client, False)

    def _flush(self, client: Client) -> None:
        if client.out:
            try:
                sent = client.sock.send(client.out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EPIPE, ECONNRESET
                self._drop(client)
                return
            del client.out[:sent]
            if client.out:
                return
            if not client.eof:
                self._watch(client, True)
        if not client.closing:
            return
        if client.eof:
            self._drop(client)
        elif not client.shut:
            client.shut = True
            try:
                client.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self._drop(client)

    def _drop(self, client: Client) -> None:
        fd = client.sock.fileno()
        if self.clients.pop(fd, None) is not None:
            self.readers.pop(fd, None)
            client.sock.close()


# -- status ---------------------------------------------------------------------------------------

class ControlServer(SocketService):
    """The control socket of one arbiter: it reads the server through ``view`` and acts only
    through ``enqueue(signal, count)``, as an operator's signals would."""

    def __init__(self, view: ServerView, enqueue: Callable[[int, int], None],
                 readers: dict[int, Callable[[], None]]) -> None:
        super().__init__(readers)
        self.view = view
        self.enqueue = enqueue
        self.path: str | None = None
        self.identity: tuple[int, int] | None = None  # (dev, inode) of the file we created
        self.cpu_samples: dict[int, tuple[float, float]] = {}  # pid -> (monotonic, cpu seconds)
        self.commands: dict[str, tuple[frozenset[str], Callable[[dict[str, Any]], dict[str, Any]]]] = {
            "status": (frozenset(), lambda request: self.status()),
            "reload": (frozenset(), lambda request: self._enqueue(signal.SIGHUP, 1)),
            "stop": (frozenset(), lambda request: self._enqueue(signal.SIGTERM, 1)),
            "workers": (frozenset({"delta"}), self._workers),
        }

    def open(self) -> None:
        """Create the socket per ``--control-socket``; log (never raise) if that fails."""
        cfg = self.view.config
        if self.sock is not None:
            return
        path = socket_path(cfg.control_socket, os.environ, cfg.pidfile, self.view.pid)
        if path is None:
            return
        if path == fallback_path(self.view.pid):
            remove_stale_fallbacks()
        try:
            sock = bind_private(path)
        except OSError as exc:
            log.error("--control-socket: cannot create %s: %s; `prefork status` and `prefork ctl` "
                      "will not reach this server", path, exc.strerror or exc)
            return
        self.path = path
        self.identity = _identity(path)
        self.serve(sock)
        log.info("Control socket at: %s", path)

    def close(self) -> None:
        super().close()
        if self.path is not None and _identity(self.path) == self.identity:
            _unlink(self.path)  # still ours: no successor has taken the path over
        self.path = None

    # -- requests -------------------------------------------------------------------------------

    def received(self, client: Client) -> None:
        while not client.closing:
            end = client.buf.find(b"\n")
            if end < 0 and not (client.eof and client.buf):
                if len(client.buf) > MAX_LINE:
                    self._answer(client, _error(f"request line longer than {MAX_LINE} bytes"), close=True)
                return
            if end < 0:  # the peer ended without a newline: its last line is complete anyway
                end = len(client.buf)
            line = bytes(client.buf[:end])
            del client.buf[:end + 1]
            if len(line) > MAX_LINE:
                self._answer(client, _error(f"request line longer than {MAX_LINE} bytes"), close=True)
                return
            if line.strip():
                self._answer(client, self.execute(line))

    def _answer(self, client: Client, response: dict[str, Any], close: bool = False) -> None:
        self.reply(client, json.dumps(response, separators=(",", ":")).encode() + b"\n", close)

    def execute(self, line: bytes) -> dict[str, Any]:
        """One request line -> one response object. Never raises on bad input."""
        try:
            request = json.loads(line)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            return _error(f"not valid JSON: {exc}")
        if not isinstance(request, dict):
            return _error('expected a JSON object, e.g. {"cmd": "status"}')
        cmd = request.get("cmd")
        if not isinstance(cmd, str):
            return _error('missing "cmd" (a string)')
        if cmd not in self.commands:
            return _error(f"unknown command {cmd!r} (known: {', '.join(sorted(self.commands))})")
        fields, run = self.commands[cmd]
        unexpected = sorted(set(request) - fields - {"cmd"})
        if unexpected:
            return _error(f"{cmd}: unexpected field {unexpected[0]!r}")
        if cmd in ("reload", "workers") and self.view.stopping:
            return _error(f"{cmd}: the arbiter is stopping")
        return run(request)

    def _workers(self, request: dict[str, Any]) -> dict[str, Any]:
        delta = request.get("delta")
        if type(delta) is not int or delta == 0 or abs(delta) > MAX_DELTA:
            return _error(f'workers: "delta" must be a non-zero integer from -{MAX_DELTA} to {MAX_DELTA}, '
                          f"got {json.dumps(delta)}")
        return self._enqueue(signal.SIGTTIN if delta > 0 else signal.SIGTTOU, abs(delta))

    def _enqueue(self, sig: signal.Signals, count: int) -> dict[str, Any]:
        """Queue ``sig`` as if an operator had sent it ``count`` times: the loop acts on it this
        turn, through the same handler. (Not through ``_on_signal``: its cap is for bursts of
        real signals, and a requested ``workers +20`` must not be cut short.)"""
        self.enqueue(sig, count)
        return {"ok": True, "signal": sig.name.removeprefix("SIG"), "count": count}

    def status(self) -> dict[str, Any]:
        server = self.view
        now = time.monotonic()
        workers = []
        for worker, slot in sorted(server.workers(), key=lambda ws: (ws[0].generation, ws[0].number, ws[0].pid)):
            rss, cpu = self._usage(worker, now)
            workers.append({
                "pid": worker.pid,
                "number": worker.number,
                "generation": worker.generation,
                "state": worker.state_name(slot),
                "retire_cause": worker.retire_cause.label if worker.retire_cause else None,
                "requests": slot.requests,
                "request_age": round(now - slot.request_start, 3) if slot.request_start else None,
                "connections": {"head": slot.head, "body": slot.body, "write": slot.write, "idle": slot.idle,
                                "closing": slot.closing},
                "buffered": slot.buffered,
                "rss": rss,
                "cpu_percent": cpu,
                "age": round(now - worker.spawned_at, 3),
            })
        live = {worker["pid"] for worker in workers}
        for pid in [pid for pid in self.cpu_samples if pid not in live]:
            del self.cpu_samples[pid]
        return {
            "ok": True,
            "pid": server.pid,
            "name": server.name,
            "version": __version__,
            "uptime": round(time.time() - server.started, 3),
            "generation": server.generation,
            "reloading": server.reloading,
            "reloads": server.reload_status,
            "stopping": server.stopping,
            "workers_wanted": server.config.workers,
            "workers": workers,
        }

    def _usage(self, worker: WorkerProcess, now: float) -> tuple[int | None, float | None]:
        """RSS in bytes and CPU% of one core: since the previous query at least CPU_WINDOW ago,
        or over the worker's life for its first. None, None if the process is already gone."""
        import psutil  # only the status view needs it: not loaded into every forked worker

        try:
            proc = psutil.Process(worker.pid)
            with proc.oneshot():
                rss = proc.memory_info().rss
                times = proc.cpu_times()
        except psutil.Error:
            return None, None
        cpu = times.user + times.system
        since, cpu_then = self.cpu_samples.get(worker.pid, (worker.spawned_at, 0.0))
        if now - since >= CPU_WINDOW:
            self.cpu_samples[worker.pid] = (now, cpu)
        return rss, round(100.0 * (cpu - cpu_then) / max(now - since, 0.01), 1)


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}

"""``--health-path``: the worker's event loop answers a health check itself, never the app.

Why not the app: a readiness probe must say whether *this replica accepts work*, which only
the server knows — and it must answer 503 the moment a stop begins (``--shutdown-delay``), so
the load balancer takes the replica out while it still serves, well before it stops
accepting. The app cannot know that, and a probe routed through it would queue behind slow
requests and fail for the wrong reason.

    GET|HEAD <path>, no body   200 "ok"        the server accepts work
                               503 "stopping"  the arbiter announced a stop (scoreboard word)

A retiring worker (a reload, the drain) answers like any other — 200 during a reload, 503 during
a stop — with ``Connection: close``, as it answers every request. Anything else on the path (a
POST, a request with a body) goes to the app as usual. The exchange is logged and counted like
an app's, so the access log shows the probes the load balancer sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from .body import EMPTY_BODY
from .connection import WRITE, ClientDisconnected, Connection
from .exchange import Exchange
from .response import SERVER_SOFTWARE, DateLine

if TYPE_CHECKING:
    from .http import Request
    from .worker import Worker

_METHODS: Final = frozenset({"GET", "HEAD"})
_STATUS: Final = {False: (200, "200 OK", b"ok\n"), True: (503, "503 Service Unavailable", b"stopping\n")}


class HealthCheck:
    """Answers ``path`` for one worker. Built only when --health-path is set, so the request
    path costs one ``is None`` check otherwise (Protocol._head)."""

    __slots__ = ("path", "worker", "server_header", "date")

    def __init__(self, path: str, worker: Worker) -> None:
        self.path = path
        self.worker = worker
        self.server_header = worker.cfg.server_header
        self.date = DateLine()

    @classmethod
    def from_worker(cls, worker: Worker) -> HealthCheck | None:
        path = worker.cfg.health_path
        return None if path is None else cls(path, worker)

    def matches(self, req: Request) -> bool:
        """A health check: GET or HEAD on the path, without a body to read."""
        return (req.path == self.path and req.method in _METHODS
                and not req.chunked and not req.content_length)

    def answer(self, conn: Connection, req: Request, now: float) -> None:
        """Send the answer (the connection parks what the socket cannot take) and leave the
        connection in WRITE with its exchange, as Protocol.serve does after an app."""
        worker = self.worker
        code, status, body = _STATUS[worker.slot.server_stopping()]
        exchange = Exchange(req, now)
        exchange.keep_alive = req.keep_alive and worker.handler.keep_alive_allowed
        exchange.status_code = code
        exchange.headers = [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
        if self.server_header:
            exchange.headers.append(("Server", SERVER_SOFTWARE))
        if not exchange.keep_alive:
            exchange.headers.append(("Connection", "close"))
        fields = "".join(f"{name}: {value}\r\n" for name, value in exchange.headers)
        head = f"HTTP/1.1 {status}\r\n{self.date.get()}{fields}\r\n"
        payload = body if req.method == "GET" else b""
        exchange.sent = len(payload)
        exchange.environ = worker.handler.environ_builder.build(conn, req, EMPTY_BODY, None)
        try:
            conn.send(head.encode("latin-1") + payload)
        except ClientDisconnected:  # the loop closes the connection when it finishes the exchange
            exchange.keep_alive = False
            exchange.sent = 0
        conn.req = None
        conn.exchange = exchange
        conn.state = WRITE

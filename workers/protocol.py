"""HTTP/1.1 on one connection: the state machine the worker's event loop drives.

    HEAD   recv into the connection's buffer until a whole head parses (--head-timeout; an
           idle keep-alive connection is HEAD with no bytes, --keep-alive)
    BODY   the loop collects the body: memory, then a spool file (workers/buffers.py);
           chunked framing decoded here; 100 Continue sent when reading starts;
           --body-timeout between reads; 503 and close if the spool file fails
    APP    the body is complete: the app runs (here, or in a pool thread with --threads) on a
           seekable wsgi.input; its response is written through, and what the client cannot
           take yet is parked (workers/connection.py); close() is called; the app is done
    WRITE  the loop sends the parked rest as the socket takes it (EPOLLOUT);
           --body-timeout between progress
    then   keep-alive: HEAD again (a pipelined head may be buffered already); else close

``advance`` runs a connection through as many states as the bytes at hand allow and returns
when it must wait for the socket. For the common request — head (and body) in one recv,
response in one send — that is one pass with no epoll change: the fast path costs one recv and
one send. Deadlines: ``_enter`` sets them for the states that wait for the client (a head
arriving in pieces, a body); APP has none (the app's time is ``--timeout``'s business); WRITE
gets one only when the socket is full; the keep-alive deadline is set where a response ends.
Each is pushed back by progress (bytes of a body, bytes taken by the client).

With ``--no-request-buffering`` a request with a body goes from HEAD straight to APP and the
app reads the body from the socket as it arrives (workers/body.py).
"""

from __future__ import annotations

import functools
import logging
import select
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .body import CONTINUE, EMPTY_BODY, RequestBody
from .buffers import RequestBuffer, WholeBody
from .connection import APP, BODY, HEAD, WRITE, ClientDisconnected, Connection
from .exchange import Exchange
from .health import HealthCheck
from .http import NEED_DATA, ParseError, check_open_line, max_head_size, parse_head
from .response import error_response

if TYPE_CHECKING:
    from .http import Request
    from .wsgi import WSGIRequestHandler
    from .worker import Worker

log = logging.getLogger("prefork.error")


class Protocol:
    """Moves a worker's connections through their states. See the module docstring."""

    def __init__(self, worker: Worker) -> None:
        cfg = worker.cfg
        self.worker = worker
        self.limits = worker.limits
        self.budget = worker.budget
        self.body_cap = cfg.body_buffer_size
        self.buffering = cfg.request_buffering
        self.head_timeout = cfg.head_timeout
        self.keepalive = cfg.keepalive
        self.io_timeout = cfg.body_timeout
        self.server_header = cfg.server_header
        #: Someone reads each finished exchange (the access log, statsd).
        self.observed = worker.access_log is not None or worker.statsd is not None
        self.health = HealthCheck.from_worker(worker)  # None unless --health-path
        # A head shorter than this cannot have a line over its limit yet (see on_readable).
        self.rescan_floor = min(self.limits.request_line, self.limits.field_size)
        self.max_head = max_head_size(self.limits)
        #: How APP runs, set by the worker: here in the loop (``serve`` with the worker's
        #: handler: the time the app finished) or handed to a pool thread (--threads: 0.0).
        self.run_app: Callable[[Connection], float] = functools.partial(self.serve, worker.handler)

    # -- events ----------------------------------------------------------------------------------

    def on_readable(self, conn: Connection) -> None:
        data = conn.recv_available()
        if data is None:
            return
        if not data:
            if conn.state == BODY:
                log.debug("client %s left during its request body", conn.remote_addr or "on a unix socket")
            self.worker.close(conn)
            return
        conn.buf += data
        self.worker.received += len(data)  # published to the scoreboard once a second
        now = time.monotonic()
        # parse_head rescans the whole buffer. Without a new line end it cannot complete a
        # head, and only the line still arriving can have grown past its limit (414/431):
        # below rescan_floor none can, above it that line alone is measured. A client
        # dribbling its head byte by byte costs a recv per wakeup, not a parse.
        if conn.state == HEAD:
            if b"\n" not in data:
                if len(conn.buf) >= self.rescan_floor:
                    try:
                        check_open_line(conn.buf, self.limits)
                    except ParseError as exc:
                        self.refuse(conn, exc.status, exc.reason)
                        return
                self._head_incomplete(conn, now)
                return
            if conn.head_started and self._parse_later(conn, len(data)):
                return
        self.advance(conn, now)

    def _parse_later(self, conn: Connection, grown: int) -> bool:
        """A head arriving in pieces, and the last read brought a line end: parse_head would
        rescan all of it, so a client sending one short line per segment (thousands with a
        high --limit-request-fields) would cost a rescan per line. Unless the read brought
        the blank line that ends a head, parse again only once the buffered head has doubled
        since the last parse (its checks run then, or at the head's end: the bytes are
        bounded by the head-size limit meanwhile). True when the parse waits."""
        buf = conn.buf
        size = len(buf)
        if buf.find(b"\r\n\r\n", max(0, size - grown - 3)) >= 0 \
                or size >= 2 * conn.head_parsed_at or size > self.max_head:
            conn.head_parsed_at = size
            return False
        return True

    # -- the states ------------------------------------------------------------------------------

    def advance(self, conn: Connection, now: float) -> None:
        """Run the connection's states until it must wait for its socket (or is closed).
        Written out for the usual path — a whole head, no body, a response that leaves at
        once — which goes HEAD, APP, WRITE and back to HEAD in one pass of the loop."""
        while True:
            state = conn.state
            if state == HEAD:
                buf = conn.buf
                if not buf:
                    return
                try:
                    parsed = parse_head(buf, self.limits)
                except ParseError as exc:
                    self.refuse(conn, exc.status, exc.reason)
                    return
                if parsed is NEED_DATA:
                    self._head_incomplete(conn, now)
                    return
                req, consumed = parsed  # type: ignore[misc]
                del buf[:consumed]
                conn.req = req
                if self.health is not None and self.health.matches(req):  # never the app's
                    self.health.answer(conn, req, now)  # leaves it in WRITE, as serve() does
                    continue
                if (req.chunked or req.content_length) and self.buffering:
                    length = req.content_length
                    if length and len(buf) >= length:  # the whole body came with the head
                        if len(buf) == length:  # (nothing pipelined behind it: one copy)
                            conn.body = WholeBody(bytes(buf))
                            buf.clear()
                        else:
                            conn.body = WholeBody(bytes(memoryview(buf)[:length]))
                            del buf[:length]
                    elif not self._start_body(conn, req, now):
                        return
                conn.state = APP  # no deadline: the app's time is --timeout's business
            elif state == BODY:
                if not self._body(conn, now):
                    return
            elif state == WRITE:
                if not self._write(conn, now):
                    return
                continue
            # APP
            now = self.run_app(conn)  # when the app finished: WRITE and keep-alive count from it
            if not now:
                return  # a pool thread has it; the loop resumes when it is back
            if not self._write(conn, now):
                return

    def _start_body(self, conn: Connection, req: Request, now: float) -> bool:
        """HEAD -> BODY: collect what came with the head; if the body is not all here and the
        client waits for it (Expect: 100-continue), invite it now that reading starts. True
        when the body is complete (the connection is in APP)."""
        conn.body = RequestBuffer(req, self.limits, self.budget, self.body_cap)
        self._enter(conn, BODY, now)
        if self._body(conn, now):
            return True
        if req.expect_continue and conn.body is not None:  # (None: refused and closed)
            conn.send(CONTINUE)
        return False

    def _body(self, conn: Connection, now: float) -> bool:
        body = conn.body
        try:
            done = body.feed(conn.buf)  # type: ignore[union-attr]
        except ParseError as exc:
            self.refuse(conn, exc.status, exc.reason)
            return False
        except OSError as exc:  # the spool file: out of fds, disk full
            self._unstorable(conn, exc)
            return False
        if done:
            conn.state = APP
            return True
        conn.deadline = self._bounded(now + self.io_timeout)  # idle limit: from the last bytes
        return False

    def serve(self, handler: WSGIRequestHandler, conn: Connection) -> float:
        """APP: run the app on the complete request, and leave the connection in WRITE with
        what the app produced sent or parked. Runs in the loop, or in a pool thread with
        --threads (the loop does not touch a connection a thread has). Returns the time the
        app finished (WRITE and keep-alive count from there)."""
        worker = self.worker
        req = conn.req
        slot = worker.slot
        started = time.monotonic()
        slot.request_started(started)
        body = conn.body
        if body is not None:
            stream: Any = body.stream()
            length = body.size if req.chunked else None  # type: ignore[union-attr]
        elif req.chunked or req.content_length:  # type: ignore[union-attr]
            stream, length = RequestBody(conn, req, self.limits), None  # type: ignore[arg-type]
        else:
            stream, length = EMPTY_BODY, None
        if worker.extras:  # a pre_request hook
            worker.before_request(req)
        exchange = handler.handle(conn, req, stream, length, started)  # type: ignore[arg-type]
        finished = time.monotonic()
        slot.request_finished(req.method, exchange.status_code, finished - started)  # type: ignore[union-attr]
        if worker.extras:  # a post_request hook, recycling rules
            worker.after_request(req, exchange, handler)
        if body is not None:
            body.close()
            conn.body = None
        elif stream.received:  # read from the socket by the app (--no-request-buffering)
            slot.add_traffic(stream.received, 0)  # (the loop never saw these bytes)
        conn.exchange = exchange
        conn.state = WRITE  # no deadline until the socket is full: see _write
        return finished

    def _write(self, conn: Connection, now: float) -> bool:
        if conn.out is not None:
            try:
                events = conn.flush()
            except ClientDisconnected as exc:
                log.debug("client %s went away during the response: %s",
                          conn.remote_addr or "on a unix socket", exc)
                self.worker.close(conn)
                return False
            if events:
                self._watch(conn, events)
                conn.deadline = self._bounded(now + self.io_timeout)  # idle limit: from progress
                return False
        exchange = conn.exchange
        conn.exchange = None
        if conn.sync:
            conn.end_response()
        if self.observed or exchange.finish is not None:  # type: ignore[union-attr]
            self._account(exchange, now)  # type: ignore[arg-type]
        else:
            self.worker.sent += exchange.sent  # type: ignore[union-attr]
        if not exchange.keep_alive:  # type: ignore[union-attr]
            # Bytes after the request, or a body the app may have left unread: the client
            # may be sending still, so read on before closing rather than reset it.
            req = exchange.req  # type: ignore[union-attr]
            self.worker.close(conn, linger=bool(conn.buf) or (
                not self.buffering and bool(req.chunked or req.content_length)))
            return False
        # Keep-alive: idle (HEAD without bytes) for --keep-alive from the last byte out. (The
        # transition _enter makes, written out here: it is every keep-alive request's.)
        conn.state = HEAD
        conn.head_started = False
        conn.deadline = now + self.keepalive if not self.worker.retiring else \
            min(now + self.keepalive, self.worker.retire_deadline)
        if conn.events != select.EPOLLIN:
            self._watch(conn, select.EPOLLIN)
        return bool(conn.buf)

    def end_exchange(self, conn: Connection, now: float) -> None:
        """The connection closes with a response not (all) sent: log it once, with the bytes
        that really left, and release what it held."""
        exchange = conn.exchange
        if exchange is None:
            return
        conn.exchange = None
        if conn.out is not None:  # what is still parked never left
            exchange.sent = max(0, exchange.sent - conn.out.pending())
            exchange.keep_alive = False
        conn.end_response()
        self._account(exchange, now)

    def _account(self, exchange: Exchange, now: float) -> None:
        """A response is over: run what waited for its end, count it, log it."""
        worker = self.worker
        if exchange.finish is not None:
            worker.run_hook(exchange.finish)
        worker.sent += exchange.sent  # published to the scoreboard once a second
        if self.observed:
            if worker.access_log is not None:
                worker.access_log.log(exchange, now - exchange.started)
            if worker.statsd is not None:
                worker.statsd.request(exchange.status_code, now - exchange.started)

    # -- transitions -----------------------------------------------------------------------------

    def _head_incomplete(self, conn: Connection, now: float) -> None:
        """Part of a head is here: from its first byte it gets --head-timeout to complete. (A
        head that arrives whole, the usual case, never needs this deadline.)"""
        if not conn.head_started:
            self._enter(conn, HEAD, now)  # (which sets head_started)

    def _enter(self, conn: Connection, state: int, now: float) -> None:
        """Put the connection in HEAD (a head's first bytes are here) or BODY, the states that
        wait for the client: their deadline and epoll interest follow from it. (APP has no
        deadline: the app's time is --timeout's business; WRITE gets one, and EPOLLOUT, only
        when the socket is full; the idle keep-alive state is set where a response ends.)"""
        conn.state = state
        if state == HEAD:
            conn.head_started = True
            conn.head_parsed_at = 0
            deadline = now + self.head_timeout
        else:
            deadline = now + self.io_timeout
        conn.deadline = self._bounded(deadline)
        if conn.events != select.EPOLLIN:
            self._watch(conn, select.EPOLLIN)

    def _bounded(self, deadline: float) -> float:
        """A deadline for a client, no later than a retiring worker's own: at that point the
        worker ends what is left (a body still arriving gets its 408) and exits."""
        worker = self.worker
        return min(deadline, worker.retire_deadline) if worker.retiring else deadline

    def _watch(self, conn: Connection, events: int) -> None:
        """Wait for ``events``; a connection not in epoll yet is registered with them later."""
        if conn.events != events:
            conn.events = events
            if conn.registered:
                self.worker.epoll.modify(conn.fd, events)

    # -- refusing and expiring -------------------------------------------------------------------

    def refuse(self, conn: Connection, status: int, reason: str) -> None:
        """Answer a request we will not run (bad head or body, over a limit, a body we cannot
        store) and close. The client may be sending still (a body over the limit): the close
        lingers, so that it reads this answer rather than a reset. Not for a client that timed
        out (408): it has gone silent, and lingering would only give a slow client more time."""
        log.debug("refusing a request from %s: %d %s", conn.remote_addr or "a unix socket", status, reason)
        try:
            conn.sock.send(error_response(status, reason, self.server_header))
        except OSError:
            pass
        self.worker.close(conn, linger=status != 408)

    def _unstorable(self, conn: Connection, exc: OSError) -> None:
        """The body outgrew memory and its spool file cannot be made or written. The server's
        trouble, not the client's, and a passing one (fds come back, disk space is freed): 503
        rather than nginx's 500, so the client and any load balancer know the request was not
        processed — the app never saw it — and may be retried. Memory is no fallback: a crowd
        of such uploads would grow the worker without bound. The close lingers, as for a 413."""
        self.budget.spool_warnings.report(
            exc, f"refused a request body from {conn.remote_addr or 'a unix socket'} with 503")
        self.refuse(conn, 503, "the request body could not be stored")

    def expire(self, conn: Connection, now: float) -> None:
        """The connection's deadline passed in its state."""
        state = conn.state
        if state == HEAD and not conn.buf:
            if not self._late_request(conn, now):
                self.worker.close(conn)
        elif state == HEAD:  # a head that never completed (slowloris): say why, best effort
            self.refuse(conn, 408, "request head not received in time")
        elif state == BODY:
            self.refuse(conn, 408, "request body not received in time")
        elif state == WRITE:
            log.debug("client %s stopped reading its response", conn.remote_addr or "on a unix socket")
            self.worker.close(conn)

    def _late_request(self, conn: Connection, now: float) -> bool:
        """An idle connection is due to close, but the client may have sent a request this
        very moment (epoll has not told us yet): closing now would answer it with a reset.
        Look once more; if bytes are there, serve them instead."""
        data = conn.recv_available()
        if not data:
            return False
        conn.buf += data
        self._enter(conn, HEAD, now)
        self.advance(conn, now)
        return True

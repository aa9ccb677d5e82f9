"""The record of one request, from its head to the last byte of its response.

The handler fills it in while the app runs; the access log, the post_request hook and the
scoreboard read it afterwards — when the response is out, which for a slow client is long
after the handler has moved on to other requests. The access log reads the attributes named
as on the handler of old (``environ``, ``req``, ``status_code``, ``headers``, ``sent``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .http import Request


class Exchange:
    """One request and what became of it.

    ``sent``: response body bytes handed to the connection (less what never reached the
    client, once the connection is closed early). ``started``: monotonic time the request
    head was complete. ``keep_alive``: the connection may carry another request.
    ``finish``: what must run once the response is out (a file_wrapper's close()).
    """

    __slots__ = ("req", "environ", "status_code", "headers", "sent", "started", "keep_alive",
                 "finish")

    req: Request
    started: float
    environ: dict[str, Any]
    status_code: int
    headers: list[tuple[str, str]]
    sent: int
    keep_alive: bool
    finish: Callable[[], Any] | None

    def __init__(self, req: Request, started: float) -> None:
        """The rest is filled in by whoever answers the request. (WSGIRequestHandler.handle,
        the hot path, makes its records with object.__new__ and sets these three itself.)"""
        self.req = req
        self.started = started
        self.finish = None

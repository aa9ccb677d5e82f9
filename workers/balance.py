"""Spreading connections evenly over the workers.

All workers accept on one shared listening socket. With EPOLLEXCLUSIVE the kernel wakes one
waiting worker per arriving connection — but a worker that was just woken still counts as
waiting until it runs, so a burst of connections (a load balancer's pool, wrk's 32) all wake
the *same* worker, and with keep-alive those connections stay with it: one core serves, the
others idle. Nothing wakes the others afterwards, because no new connection arrives.

So each worker publishes its open-connection count in the scoreboard, and takes a connection
only while it holds no more than the least-loaded accepting worker plus a small slack. A worker
over its share leaves epoll for the listeners and pokes its peers through a shared eventfd
(edge-triggered, so every worker sees each poke once; only workers watch it, and none reads
it, so no one can swallow a poke meant for another); a poked worker re-registers its
listeners, which makes epoll look at the queue again and see the connections the first worker
left. The least-loaded worker is always allowed to accept, so someone always does.

The scoreboard's layout stays in scoreboard.py: this module asks the worker's :class:`Slot`.
"""

from __future__ import annotations

import os
from typing import Final

from .scoreboard import Slot

#: How many connections above the least-loaded peer a worker may hold before it stops
#: accepting; for big counts an eighth more, so thousands of connections do not ping-pong.
ACCEPT_SLACK: Final = 1


class AcceptBalance:
    """A worker's view of its share of the connections."""

    __slots__ = ("slot", "publish", "fd")

    def __init__(self, slot: Slot) -> None:
        self.slot = slot
        #: ``publish(connections)``: our open-connection count, for the peers' ``fair``.
        self.publish = slot.publish_connections
        self.fd = slot.balance_fd

    def fair(self, connections: int) -> bool:
        """May a worker holding ``connections`` take one more?"""
        if connections <= ACCEPT_SLACK:
            return True
        low = self.slot.fewest_peer_connections()
        return low < 0 or connections <= low + max(ACCEPT_SLACK, low >> 3)

    def poke(self) -> None:
        """Wake every worker to look at the listen queue."""
        os.eventfd_write(self.fd, 1)

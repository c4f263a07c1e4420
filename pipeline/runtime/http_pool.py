"""httpcore2's connection pool with a bookkeeping pass that skips busy connections.

httpcore2 runs one pass over the pool (``_assign_requests_to_connections``)
when a request arrives and when a response closes: it asks every open
connection whether it is closed, connected, expired, idle and available, a
handful of method calls each, so a pool of many long streams pays for every
connection, twice per request, and under load each of those objects is a
cache miss. Hand-written for that cost (``bench/README.md``, "The connection
pool's pass").

In a pool without HTTP/2 a connection that an in-flight request holds is,
by the pass's own rules, never expired, never a spare idle one and never
available to another request: the only thing the pass could do with it is
drop it if it has closed. :class:`LightPool` keeps it without asking; it is
asked, with httpcore2's own checks, on the first pass after its request has
let it go (the response closed, or the request failed: what a closed
connection soon makes happen). Every other connection gets httpcore2's
checks. So the outcome is httpcore2's (the same connections kept, in the
same order, the same ones closed, the same requests assigned:
``tests/test_http_pool.py`` compares both passes on random pools), except
that a connection which closed while held stays listed (and counted against
``max_connections``) until its request lets it go. A pool with HTTP/2 takes
httpcore2's pass.
"""

from __future__ import annotations

import httpcore2
from httpcore2._async.interfaces import AsyncConnectionInterface

__all__ = ["LightPool"]


class LightPool(httpcore2.AsyncConnectionPool):
    """An ``httpcore2.AsyncConnectionPool`` whose pass leaves the connections requests hold."""

    def _assign_requests_to_connections(self) -> list[AsyncConnectionInterface]:
        if self._http2:
            return super()._assign_requests_to_connections()
        closing: list[AsyncConnectionInterface] = []
        retained: list[AsyncConnectionInterface] = []
        free: list[AsyncConnectionInterface] = []  # retained, and no request holds it
        held = {request.connection for request in self._requests}
        for connection in self._connections:
            if connection in held:  # kept as it is: not even asked whether it closed
                retained.append(connection)
            elif connection.is_closed() or not connection.is_connected():
                continue
            elif connection.has_expired():
                closing.append(connection)
            else:
                retained.append(connection)
                free.append(connection)

        # Surplus idle connections (max_keepalive_connections), the first ones first.
        idle = [connection for connection in free if connection.is_idle()]
        surplus = len(idle) - self._max_keepalive_connections
        if surplus > 0:
            dropped = {id(connection) for connection in idle[:surplus]}
            closing.extend(idle[:surplus])
            retained = [c for c in retained if id(c) not in dropped]
            free = [c for c in free if id(c) not in dropped]
        self._connections = retained

        available = [connection for connection in free if connection.is_available()]
        budget = self._max_connections - len(retained)
        for request in self._requests:
            if not available and budget <= 0:
                break
            if request.connection is not None:  # not queued (is_queued(), without the call)
                continue
            origin = request.request.url.origin
            for index, connection in enumerate(available):
                if connection.can_handle_request(origin):
                    request.assign_to_connection(connection)
                    if connection.is_idle():  # HTTP/1.1: this one request until released
                        del available[index]
                    break
            else:
                if budget > 0:
                    connection = self.create_connection(origin)
                    retained.append(connection)
                    request.assign_to_connection(connection)
                    budget -= 1
                    continue
                for index, connection in enumerate(available):
                    if connection.is_idle():
                        del available[index]
                        retained.remove(connection)
                        closing.append(connection)
                        connection = self.create_connection(origin)
                        retained.append(connection)
                        request.assign_to_connection(connection)
                        break
        return closing

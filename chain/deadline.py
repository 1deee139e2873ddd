"""Whole-request deadlines for ``requests``: a watchdog that shuts down the socket of a request past its deadline.

``requests`` (urllib3) has a connect timeout and a per-read timeout, but no deadline for a whole request: a
server that trickles its status line, headers or body — a byte every few seconds — restarts the read timeout
with every byte and keeps the caller forever. Here every request of a :func:`new_session` session can carry a
deadline (monotonic seconds):

- :class:`SocketWatchdog` is one thread that sleeps until the earliest armed deadline and then shuts the
  socket down (``shutdown(SHUT_RDWR)``, what urllib3's own ``HTTPResponse.shutdown`` does): a read blocked on
  it returns at once, and the request fails with a connection error that :class:`RequestGuard` reports as
  ``expired``. ``abort_all`` ends every armed request at once (another range failed: the snapshot is over).
- The session's connections (:class:`DeadlineAdapter`) arm the watchdog for the socket they are about to
  read the response from, as soon as the request is sent (``getresponse``): the status line, the headers and
  the body (read by the caller afterwards) are all covered, until the caller's :meth:`RequestGuard.finish`
  disarms it. Which guard applies is a thread-local (:func:`guarding`): each request runs in one thread.
  After ``abort_all`` a request armed later (it was still connecting) is cut as soon as it is armed.

A finished request is disarmed under the watchdog's lock, so a socket handed back to the connection pool is
never shut down afterwards. Connecting is bounded by the connect timeout; name resolution is not (the
system resolver's own timeouts apply).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

#: What became of a guarded request: still armed (finished in time), expired (deadline), aborted (abort_all).
GuardState = Literal["armed", "expired", "aborted"]


@dataclass
class _Armed:
    sock: socket.socket
    deadline_s: float
    state: GuardState = "armed"


class SocketWatchdog:
    """One thread shutting down armed sockets whose deadline (``clock`` seconds) has passed."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._armed: dict[int, _Armed] = {}
        self._next_token = 0
        self._stopped = False
        self._aborted = False
        self._thread = threading.Thread(target=self._run, name="chain-deadline", daemon=True)

    def __enter__(self) -> SocketWatchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the thread (armed sockets are left alone)."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def arm(self, sock: socket.socket, deadline_s: float) -> int:
        """Shut ``sock`` down at ``deadline_s`` unless disarmed first — at once after :meth:`abort_all`;
        returns the token to disarm with."""
        with self._cond:
            self._next_token += 1
            entry = self._armed[self._next_token] = _Armed(sock, deadline_s)
            if self._aborted:  # a request that was still connecting when the others were cut
                _shut(entry, "aborted")
            self._cond.notify()
            return self._next_token

    def disarm(self, token: int) -> GuardState:
        """Forget ``token``; returns ``armed`` when its socket was never shut down, else why it was."""
        with self._cond:
            entry = self._armed.pop(token, None)
            return "armed" if entry is None else entry.state

    def abort_all(self) -> int:
        """Shut down every armed socket now, and any armed from now on (state ``aborted``); returns how many
        were armed."""
        with self._cond:
            self._aborted = True
            live = [entry for entry in self._armed.values() if entry.state == "armed"]
            for entry in live:
                _shut(entry, "aborted")
            return len(live)

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                now = self._clock()
                wait_s: float | None = None
                for entry in self._armed.values():
                    if entry.state != "armed":
                        continue
                    if entry.deadline_s <= now:
                        _shut(entry, "expired")
                    else:
                        left = entry.deadline_s - now
                        wait_s = left if wait_s is None else min(wait_s, left)
                self._cond.wait(wait_s)


def _shut(entry: _Armed, state: GuardState) -> None:
    entry.state = state
    with suppress(OSError):  # already closed: nothing left to wake
        entry.sock.shutdown(socket.SHUT_RDWR)


class RequestGuard:
    """The deadline of one request: armed on the request's socket by the session's connection, finished by
    the caller once the response (body included) is read or abandoned."""

    def __init__(self, watchdog: SocketWatchdog, deadline_s: float) -> None:
        self.watchdog = watchdog
        self.deadline_s = deadline_s
        self._tokens: list[int] = []

    def watch(self, sock: socket.socket) -> None:
        """Arm the watchdog on ``sock`` (called by the connection when it starts reading the response)."""
        self._tokens.append(self.watchdog.arm(sock, self.deadline_s))

    def finish(self) -> GuardState:
        """Disarm; ``armed`` when the request ended by itself, ``expired`` / ``aborted`` when it was cut."""
        states = [self.watchdog.disarm(token) for token in self._tokens]
        self._tokens.clear()
        return next((state for state in states if state != "armed"), "armed")


_current = threading.local()


@contextmanager
def guarding(guard: RequestGuard | None) -> Iterator[RequestGuard | None]:
    """Requests sent by this thread inside the block are armed with ``guard``; it is finished by the caller."""
    previous = getattr(_current, "guard", None)
    _current.guard = guard
    try:
        yield guard
    finally:
        _current.guard = previous


class _WatchedResponse:
    """Arms the thread's current guard on the socket before the response is read (status line onwards)."""

    sock: socket.socket | None

    def getresponse(self) -> Any:
        guard = getattr(_current, "guard", None)
        if guard is not None and self.sock is not None:
            guard.watch(self.sock)
        return super().getresponse()  # type: ignore[misc]


class _WatchedHTTPConnection(_WatchedResponse, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedResponse, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections arm the thread's :class:`RequestGuard` (see :func:`guarding`)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """The usual pool manager, with connection pools of watched connections."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """The usual proxy manager, with watched connections (not for SOCKS proxies, which bring their own)."""
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
        return manager

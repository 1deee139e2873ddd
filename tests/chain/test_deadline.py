"""The whole-request deadline: the socket watchdog on real sockets (a blocked read is woken, never a timing)."""

from __future__ import annotations

import socket
import threading
import time

from chain.deadline import RequestGuard, SocketWatchdog

BOUND_S = 30  # a generous bound: only a hang reaches it


def blocked_reader(sock: socket.socket) -> tuple[threading.Thread, list[bytes]]:
    """A thread blocked reading ``sock`` (no timeout of its own) and what it read."""
    got: list[bytes] = []
    thread = threading.Thread(target=lambda: got.append(sock.recv(10)), daemon=True)
    thread.start()
    return thread, got


def test_a_read_blocked_past_its_deadline_is_woken_and_reported_expired() -> None:
    a, b = socket.socketpair()
    with a, b, SocketWatchdog() as watchdog:
        guard = RequestGuard(watchdog, time.monotonic() + 0.2)
        guard.watch(a)
        thread, got = blocked_reader(a)
        thread.join(BOUND_S)
        assert not thread.is_alive() and got == [b""]  # the peer never wrote: shut down, not answered
        assert guard.finish() == "expired"


def test_a_request_finished_in_time_is_disarmed_and_its_socket_left_alone() -> None:
    a, b = socket.socketpair()
    with a, b, SocketWatchdog() as watchdog:
        guard = RequestGuard(watchdog, time.monotonic() + 0.2)
        guard.watch(a)
        assert guard.finish() == "armed"
        other = RequestGuard(watchdog, time.monotonic() + 0.2)  # a later request's deadline passes meanwhile
        c, d = socket.socketpair()
        with c, d:
            other.watch(c)
            thread, _ = blocked_reader(c)
            thread.join(BOUND_S)
            assert other.finish() == "expired"
        b.sendall(b"still open")  # the disarmed socket was never shut down (a pooled connection stays usable)
        assert a.recv(10) == b"still open"


def test_abort_all_cuts_every_armed_request_at_once() -> None:
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        with SocketWatchdog() as watchdog:
            guards = [RequestGuard(watchdog, time.monotonic() + 3600) for _ in pairs]
            readers = []
            for guard, (a, _) in zip(guards, pairs, strict=True):
                guard.watch(a)
                readers.append(blocked_reader(a))
            assert watchdog.abort_all() == 3
            for thread, got in readers:
                thread.join(BOUND_S)
                assert not thread.is_alive() and got == [b""]
            assert [guard.finish() for guard in guards] == ["aborted"] * 3
            assert watchdog.abort_all() == 0
            late = RequestGuard(watchdog, time.monotonic() + 3600)  # still connecting when the others were cut
            c, d = socket.socketpair()
            with c, d:
                c.settimeout(BOUND_S)  # (a hang fails, it does not block)
                late.watch(c)
                assert c.recv(10) == b"" and late.finish() == "aborted"  # cut as soon as it is armed
    finally:
        for a, b in pairs:
            a.close()
            b.close()

"""Connection limits of one ``python -m web`` process and the count of everything it refused, by reason.

Open connections decide what a new connection may do (:meth:`ConnectionGuard.admit`):

- up to ``max_connections``: anything;
- over it, up to the file ceiling: only ``GET /healthz`` (answered, then closed); any other request gets
  ``503`` as soon as its headers are read, and the connection has a short header deadline — so a monitor
  is answered while the process is full, and a flood of idle connections over the cap drains in seconds;
- at the file ceiling (the open-file limit minus :data:`FD_HEADROOM`, kept for Redis connections, log files
  and the listening socket): ``503`` at once and closed, so the process never runs out of descriptors.

Every refusal is counted by reason (shown by ``/healthz``) and logged at most once per reason every
:data:`LOG_EVERY_S` with the number refused since the last line — a flood must not flood the log.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fabric.settings import Settings

log = logging.getLogger(__name__)

#: descriptors kept free of client connections: Redis (pub/sub and reads), log files, listening sockets
FD_HEADROOM = 256
#: connections between the cap and the file ceiling, at least: room for /healthz while the process is full
HEALTH_ROOM = 64
#: header deadline of a connection accepted over the cap (it may only ask for /healthz, in one packet)
OVER_CAPACITY_HEADER_TIMEOUT_S = 2.0
#: after a 431, what the client still sends is read and discarded this long (or this much) before closing,
#: so it reads the answer instead of a reset (closing with unread input makes the kernel send RST)
LINGER_S = 2.0
LINGER_MAX_BYTES = 4 << 20
#: one log line per refusal reason at most this often
LOG_EVERY_S = 5.0
#: what RLIMIT_NOFILE is raised to when its hard limit is unlimited
NOFILE_WHEN_UNLIMITED = 1 << 20

#: every refusal reason, in the order ``/healthz`` shows them
REASONS = (
    "over_capacity",
    "at_file_limit",
    "headers_too_large",
    "too_many_headers",
    "header_timeout",
    "bad_request",
    "token_in_query",
)


class Admission(enum.Enum):
    """What a newly accepted connection may do."""

    SERVE = "serve"
    HEALTH_ONLY = "health_only"
    CLOSE = "close"


def open_file_limit() -> int:
    """The process's soft RLIMIT_NOFILE (descriptors it may hold)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return NOFILE_WHEN_UNLIMITED if soft == resource.RLIM_INFINITY else soft


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (children forked later inherit it); returns the soft limit.

    An unlimited hard limit is taken as ``fs.nr_open`` (the kernel's ceiling), else :data:`NOFILE_WHEN_UNLIMITED`.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard
    if hard == resource.RLIM_INFINITY:
        try:
            wanted = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            wanted = NOFILE_WHEN_UNLIMITED
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (OSError, ValueError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, wanted, exc)
    return open_file_limit()


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits one web process enforces (see the module docstring)."""

    max_connections: int
    max_header_bytes: int
    max_headers: int
    header_timeout_s: float
    #: open connections past which a new one is closed at once
    file_ceiling: int

    @classmethod
    def for_process(cls, settings: Settings, files: int | None = None) -> ConnectionLimits:
        """The limits of ``settings`` within an open-file limit of ``files`` (default: this process's).

        The connection cap is lowered, with a warning, when it leaves less than :data:`HEALTH_ROOM`
        connections below the file ceiling.
        """
        files = open_file_limit() if files is None else files
        ceiling = max(2, files - min(FD_HEADROOM, files // 4))
        cap = min(settings.web_max_connections, max(1, ceiling - HEALTH_ROOM))
        if cap < settings.web_max_connections:
            log.warning(
                "MMAKER_WEB_MAX_CONNECTIONS=%d lowered to %d: the open-file limit is %d (raise it: ulimit -Hn)",
                settings.web_max_connections,
                cap,
                files,
            )
        return cls(
            max_connections=cap,
            max_header_bytes=settings.web_max_header_bytes,
            max_headers=settings.web_max_headers,
            header_timeout_s=settings.web_header_timeout_s,
            file_ceiling=ceiling,
        )


class ConnectionGuard:
    """Open connections of one process, admission by :class:`ConnectionLimits`, refusals counted by reason.

    Used from the event loop only (no locking). ``clock`` is monotonic seconds.
    """

    def __init__(self, limits: ConnectionLimits, clock: Callable[[], float] = time.monotonic):
        self.limits = limits
        self.open = 0
        self.refused: dict[str, int] = dict.fromkeys(REASONS, 0)
        self._clock = clock
        self._unlogged: dict[str, int] = dict.fromkeys(REASONS, 0)
        self._logged_s: dict[str, float] = dict.fromkeys(REASONS, -math.inf)
        self._flushes: dict[str, asyncio.TimerHandle] = {}
        self._why = {
            "over_capacity": f"over {limits.max_connections} open connections: 503",
            "at_file_limit": f"at {limits.file_ceiling} open connections, the file ceiling: 503 at accept",
            "headers_too_large": f"request line and headers over {limits.max_header_bytes} bytes: 431",
            "too_many_headers": f"over {limits.max_headers} headers: 431",
            "header_timeout": f"headers not complete within {limits.header_timeout_s:g} s: closed",
            "bad_request": "a malformed HTTP request: 400",
            "token_in_query": "a credential in the query string of /api or /stream: 400",
        }

    def admit(self) -> Admission:
        """Count a newly accepted connection and say what it may do (pair with :meth:`release`)."""
        self.open += 1
        if self.open <= self.limits.max_connections:
            return Admission.SERVE
        if self.open <= self.limits.file_ceiling:
            return Admission.HEALTH_ONLY
        return Admission.CLOSE

    def release(self) -> None:
        """A connection counted by :meth:`admit` closed."""
        self.open -= 1

    def refuse(self, reason: str) -> None:
        """Count a refusal; log it unless this reason was logged less than :data:`LOG_EVERY_S` ago (then a
        timer logs the count when the interval is over)."""
        self.refused[reason] += 1
        self._unlogged[reason] += 1
        since = self._clock() - self._logged_s[reason]
        if since >= LOG_EVERY_S:
            self._log(reason)
        elif reason not in self._flushes:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a unit test): the next refusal after the interval logs the count
                return
            self._flushes[reason] = loop.call_later(LOG_EVERY_S - since, self._flush, reason)

    def report(self) -> dict[str, object]:
        """Open connections, the limits and refusals by reason (``/healthz``)."""
        limits = self.limits
        return {
            "connections": self.open,
            "max_connections": limits.max_connections,
            "file_ceiling": limits.file_ceiling,
            "max_header_bytes": limits.max_header_bytes,
            "max_headers": limits.max_headers,
            "header_timeout_s": limits.header_timeout_s,
            "refused": dict(self.refused),
        }

    def _flush(self, reason: str) -> None:
        self._flushes.pop(reason, None)
        if self._unlogged[reason]:
            self._log(reason)

    def _log(self, reason: str) -> None:
        count, self._unlogged[reason] = self._unlogged[reason], 0
        self._logged_s[reason] = self._clock()
        log.warning("refused %d (%s: %s); %d since start", count, reason, self._why[reason], self.refused[reason])

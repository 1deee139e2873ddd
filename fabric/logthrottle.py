"""Log lines that a flood cannot multiply: at most one line per kind every few seconds, with a count.

A hostile or broken peer can repeat one event a million times (a status string, a refused write, a bad
frame); each would otherwise be a log line. :class:`LogThrottle` lets the first line of a kind through, then
one line per interval saying how many were held back. The kinds must come from code, never from input text:
the throttle keeps one entry per kind.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class LogThrottle:
    """Decides, per kind, whether a line may be logged now: at most one every ``every_s`` seconds."""

    def __init__(self, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, kind: str) -> int | None:
        """None: hold this line back (counted); else log it now, and the returned number of lines of this kind
        were held back since the last one logged."""
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.every_s:
            self._held[kind] = self._held.get(kind, 0) + 1
            return None
        self._last[kind] = now
        return self._held.pop(kind, 0)

"""Waiting for something in a test: poll a predicate with a generous timeout — never a timed assertion."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol


class HasLogs(Protocol):
    """Anything that can show the tail of its processes' logs (a ``Stack``, a set of workers)."""

    def logs_tail(self) -> str: ...


Context = Path | HasLogs | Callable[[], str] | None


def wait_for(
    predicate: Callable[[], Any], timeout_s: float = 30.0, what: str = "the condition", context: Context = None
) -> Any:
    """Poll ``predicate`` every 50 ms until it returns something truthy, and return that.

    After ``timeout_s`` fail naming ``what``, followed by ``context``: a log file's tail, an object's
    ``logs_tail()``, or a callable's text — so a failure in CI shows what the processes said.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s\n{_context_text(context)}")
        time.sleep(0.05)


async def until(
    predicate: Callable[[], Awaitable[object] | object], what: str = "the condition", timeout_s: float = 60.0
) -> None:
    """:func:`wait_for` inside an event loop: ``predicate`` may be a coroutine function; sleeps without
    blocking the loop (the service under test keeps running)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.05)


def _context_text(context: Context) -> str:
    if context is None:
        return ""
    if isinstance(context, Path):
        return context.read_text(errors="replace")[-3000:] if context.exists() else f"({context} does not exist)"
    logs_tail = getattr(context, "logs_tail", None)
    if logs_tail is not None:
        return logs_tail()
    return context()  # type: ignore[operator]

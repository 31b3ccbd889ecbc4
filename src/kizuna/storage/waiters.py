"""Callers waiting for a group commit on a writer thread: threads and event loops.

A writer thread commits many callers' work at once and then hands each caller its
outcome. A caller on a thread waits on a :class:`concurrent.futures.Future`; a caller on
an event loop awaits an :class:`asyncio.Future` instead, so it ties up no thread of the
loop's pool while it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from concurrent.futures import Future
from typing import Any

Waiter = Future | asyncio.Future


def new_waiter(on_loop: bool) -> Waiter:
    """A future for the calling thread (``on_loop``: the running event loop's)."""
    return asyncio.get_running_loop().create_future() if on_loop else Future()


def deliver(outcomes: list[tuple[Waiter, Any]]) -> None:
    """Hand each waiting caller its outcome (an exception is raised to the caller).

    Threads are woken directly, event loops in one call per loop: each wake-up of a loop
    from another thread is a write to its self-pipe and a GIL hand-over.
    """
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Any]]] = defaultdict(list)
    for waiter, outcome in outcomes:
        if isinstance(waiter, asyncio.Future):
            by_loop[waiter.get_loop()].append((waiter, outcome))
        elif isinstance(outcome, BaseException):
            waiter.set_exception(outcome)
        else:
            waiter.set_result(outcome)
    for loop, pairs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            loop.call_soon_threadsafe(_settle, pairs)


def _settle(pairs: list[tuple[asyncio.Future, Any]]) -> None:
    for future, outcome in pairs:
        if future.done():  # cancelled: the client went away
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

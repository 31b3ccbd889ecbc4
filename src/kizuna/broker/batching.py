"""Group commit for single-entity writes: many concurrent requests, one transaction.

Each request's work runs in a shared transaction on one writer thread, and all of them
are acknowledged after its single COMMIT, so the per-request cost of BEGIN / COMMIT and
the disk flush is shared (batching is where write speed comes from). The entities the
group writes are locked and read in one statement first (``store.hold``) and their
updates written in one statement last, so a request costs no round trip of its own.
Work functions validate before they write, so a :class:`Problem` raised by one leaves the
others' writes intact; any other error (a lost race on a unique key, a dropped
connection) makes the batch run again one request at a time, so one request's failure
never fails another.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from kizuna.broker import store
from kizuna.broker.changes import close_group, open_group
from kizuna.problems import Problem
from kizuna.storage.waiters import Waiter, deliver, new_waiter

T = TypeVar("T")
log = logging.getLogger("kizuna.broker")
_MAX_BATCH = 128
# How often a write that lost a race on a unique key is run again (it then sees the winner).
RETRIES_ON_RACE = 3


class GroupCommitter:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._queue: queue.SimpleQueue[tuple[store.Key, Callable[[Connection], Any], Waiter]] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name="kizuna-writer", daemon=True)
        self._thread.start()

    def submit(self, key: store.Key, work: Callable[[Connection], T]) -> T:
        """Run ``work`` (which writes the entity ``key``: tenant, id) and return once it is
        committed."""
        future = new_waiter(on_loop=False)
        self._queue.put((key, work, future))
        return future.result()

    async def submit_async(self, key: store.Key, work: Callable[[Connection], T]) -> T:
        """:meth:`submit` for callers on an event loop: no thread waits, and the writer
        wakes the loop once per group."""
        future = new_waiter(on_loop=True)
        self._queue.put((key, work, future))
        return await future

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < _MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            # Rows are locked in key order in every process, so two batches never deadlock.
            batch.sort(key=lambda item: item[0])
            self._execute(batch)

    def _execute(self, batch: list[tuple[store.Key, Callable[[Connection], Any], Waiter]]) -> None:
        try:
            outcomes = self._in_one_transaction(batch)
        except Exception as exc:  # noqa: BLE001 - isolate every request, then report
            if len(batch) > 1:
                for item in batch:
                    self._execute([item])
                return
            self._settle_alone(batch[0], exc)
            return
        deliver(
            [
                (future, value if problem is None else problem)
                for (_, _, future), (value, problem) in zip(batch, outcomes, strict=True)
            ]
        )

    def _in_one_transaction(
        self, batch: list[tuple[store.Key, Callable[[Connection], Any], Waiter]]
    ) -> list[tuple[Any, Problem | None]]:
        outcomes: list[tuple[Any, Problem | None]] = []
        with self._engine.begin() as conn:
            open_group(conn)
            try:
                store.hold(conn, (key for key, _, _ in batch))
                for _, work, _ in batch:
                    try:
                        outcomes.append((work(conn), None))
                    except Problem as problem:
                        outcomes.append((None, problem))
            except BaseException:
                close_group(conn, flush=False)
                raise
            finally:
                store.release(conn)
            close_group(conn, flush=True)  # queued writes and listeners' work, before COMMIT
        return outcomes

    def _settle_alone(
        self, item: tuple[store.Key, Callable[[Connection], Any], Waiter], error: Exception
    ) -> None:
        """A lone request that failed: retry a lost race (the retry sees the winner)."""
        future = item[2]
        for _ in range(RETRIES_ON_RACE):
            if not isinstance(error, IntegrityError):
                break
            try:
                [(value, problem)] = self._in_one_transaction([item])
            except Exception as exc:  # noqa: BLE001
                error = exc
                continue
            deliver([(future, value if problem is None else problem)])
            return
        log.error("write failed: %s", error)
        deliver([(future, error)])


# What a single-entity write method returns to :class:`entity_write`: its tenant scope,
# the entity id and the work to run in the group commit.
Planned = tuple[Any, str, Callable[[Connection], T]]


class entity_write:  # noqa: N801 - used as a method decorator, like property
    """A single-entity write of the broker, callable from threads and event loops.

    The decorated method validates its input and returns ``(scope, entity id, work)``.
    ``broker.method(...)`` runs the work in the group commit and returns its result once
    committed; ``await broker.method.on_loop(...)`` does the same from an event loop
    without a thread of the loop's pool waiting for the commit.
    """

    def __init__(self, plan: Callable[..., Planned[Any]]) -> None:
        self._plan = plan
        self.__doc__ = plan.__doc__

    def __get__(self, broker: Any, owner: type | None = None) -> Any:
        return self if broker is None else _BoundEntityWrite(broker, self._plan)


class _BoundEntityWrite:
    __slots__ = ("_broker", "_plan")

    def __init__(self, broker: Any, plan: Callable[..., Any]) -> None:
        self._broker = broker
        self._plan = plan

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._broker.write_one(*self._plan(self._broker, *args, **kwargs))

    async def on_loop(self, *args: Any, **kwargs: Any) -> Any:
        return await self._broker.write_one_async(*self._plan(self._broker, *args, **kwargs))

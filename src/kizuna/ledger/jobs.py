"""Background work of a server process: checkpoints on an interval, timeouts and expiry.

Every process may run these at once: checkpoints are keyed by (tenant, size) and the
transfers the jobs write have ids derived from what they sweep, so nothing happens twice.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import select

from kizuna.ledger.models import logs
from kizuna.ledger.service import Ledger

log = logging.getLogger("kizuna.ledger")


class LedgerJobs:
    def __init__(self, ledger: Ledger, checkpoint_seconds: float, jobs_seconds: float) -> None:
        self.ledger = ledger
        self.checkpoint_seconds = checkpoint_seconds
        self.jobs_seconds = jobs_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.checkpoint_seconds <= 0 and self.jobs_seconds <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="kizuna-ledger-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def tenants(self) -> list[str]:
        with self.ledger.engine.connect() as conn:
            return sorted(conn.execute(select(logs.c.tenant_id).where(logs.c.size > 0)).scalars())

    def run_checkpoints(self) -> None:
        for tenant in self.tenants():
            self.ledger.checkpoint(tenant)

    def run_jobs(self) -> None:
        for tenant in self.tenants():
            self.ledger.void_expired_pending(tenant)
            self.ledger.expire_lots(tenant)

    def _run(self) -> None:
        next_cp = next_jobs = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                if self.checkpoint_seconds > 0 and now >= next_cp:
                    next_cp = now + self.checkpoint_seconds
                    self.run_checkpoints()
                if self.jobs_seconds > 0 and now >= next_jobs:
                    next_jobs = now + self.jobs_seconds
                    self.run_jobs()
            except Exception:  # noqa: BLE001 - a failed round is retried next round
                log.exception("ledger job failed")
            self._stop.wait(1.0)

"""The ledger's front door: the functions other modules (points, watch, ...) may call.

Everything takes the tenant explicitly; routes pass ``scope.tenant`` from a checked
:class:`~kizuna.tenancy.service.TenantScope`. Amounts are integer points.

Writes::

    ledger = Ledger(engine, data_dir)
    ledger.create_currency("takasago", CurrencyCreate(code="gyosei", ...))
    ledger.open_account("takasago", AccountCreate(code="resident:42", currency="gyosei", kind="resident"))
    results = ledger.post_transfers("takasago", [TransferCreate(...), ...])   # one transaction
    result = ledger.post_transfer("takasago", TransferCreate(...))            # group-committed

``post_transfers`` never raises for a bad transfer: each result says ``created``, ``exists``
(the same id and body were accepted before: the first result is returned) or ``failed``
with a ``urn:kizuna:errors:ledger:*`` error. ``post_transfer`` raises that error as a
:class:`~kizuna.problems.Problem` instead.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, Engine, func, insert, or_, select, update

from kizuna.ledger import audit, merkle, settlement
from kizuna.ledger.apply import (
    Batch,
    Item,
    apply_batch,
    from_us,
    lock_head,
    now_us,
    result_problem,
    to_us,
    transfer_public,
)
from kizuna.ledger.errors import ledger_problem
from kizuna.ledger.keys import KeyStore, public_bytes
from kizuna.ledger.models import accounts, checkpoints, currencies, lots, transfers
from kizuna.ledger.purchase import apply_purchase, purchase_public, rules_of
from kizuna.ledger.schemas import (
    AccountCreate,
    AccountKind,
    AccountPublic,
    CheckpointPublic,
    ConsistencyProof,
    CurrencyCreate,
    CurrencyPublic,
    ExpiryPublic,
    LotPublic,
    MerchantTerms,
    PurchaseCreate,
    PurchasePublic,
    PurchaseRules,
    Receipt,
    SettlementPublic,
    TransferCreate,
    TransferPublic,
    TransferResult,
    VerifyReport,
)
from kizuna.ledger.zengin import Originator
from kizuna.storage import writer
from kizuna.storage.waiters import Waiter, deliver

log = logging.getLogger("kizuna.ledger")
# Namespace of ids the ledger derives itself (expiry sweeps, timeout voids, settlements).
LEDGER_NS = uuid.UUID("6b697a75-6e61-4c65-8467-657200000001")
MAX_BATCH = 8190  # TigerBeetle's batch size; larger requests are refused, not split
_GROUP_MAX = 512


def derived_id(*parts: object) -> str:
    return str(uuid.uuid5(LEDGER_NS, "/".join(str(p) for p in parts)))


def system_accounts(currency: str) -> dict[str, str]:
    """Codes of the accounts every currency gets: issuance, expiry sink, settlement."""
    return {
        "issuance": f"issuance:{currency}",
        "expiry": f"expiry:{currency}",
        "settlement": f"settlement:{currency}",
    }


def _account_public(row: Any) -> AccountPublic:
    balance = row.credits_posted - row.debits_posted
    return AccountPublic(
        code=row.code,
        currency=row.currency,
        kind=row.kind,
        name=row.name,
        allow_negative=row.allow_negative,
        max_credits=row.max_credits,
        max_debits=row.max_debits,
        daily_send_limit=row.daily_send_limit,
        debits_posted=row.debits_posted,
        credits_posted=row.credits_posted,
        debits_pending=row.debits_pending,
        credits_pending=row.credits_pending,
        balance=balance,
        available=balance - row.debits_pending,
        closed=row.closed,
    )


class Ledger:
    """One per process (``app.state.services.ledger``); thread-safe."""

    def __init__(self, engine: Engine, data_dir: Path | None = None) -> None:
        self.engine = engine
        self.keys = KeyStore((data_dir or Path("var")) / "ledger-keys")
        self._queue: queue.SimpleQueue[tuple[str, Item, Waiter]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None  # the writer thread's own
        self._groups = 0  # groups committed (the checkpointer runs when it moved)
        self._start_lock = threading.Lock()

    # --- currencies and accounts -----------------------------------------------------------

    def create_currency(self, tenant: str, spec: CurrencyCreate) -> CurrencyPublic:
        """Create a currency with its issuance, expiry-sink and settlement accounts.

        Creating it again with the same settings returns it; different settings → 409.
        """
        values = spec.model_dump(mode="json")
        with writer(self.engine).begin() as conn:
            lock_head(conn, tenant)
            row = conn.execute(
                select(currencies).where(
                    currencies.c.tenant_id == tenant, currencies.c.code == spec.code
                )
            ).first()
            if row is not None:
                stored = CurrencyCreate.model_validate(row, from_attributes=True)
                if stored.model_dump(mode="json") != values:
                    raise ledger_problem(
                        "currency-conflict", f"currency {spec.code!r} exists with other settings"
                    )
                return _currency_public(row)
            conn.execute(insert(currencies).values(tenant_id=tenant, created_us=now_us(), **values))
            codes = system_accounts(spec.code)
            for kind, code in codes.items():
                conn.execute(
                    insert(accounts).values(
                        **_account_values(
                            tenant,
                            AccountCreate(code=code, currency=spec.code, kind=AccountKind(kind)),
                        )
                    )
                )
        return CurrencyPublic(**values)

    def list_currencies(self, tenant: str) -> list[CurrencyPublic]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(currencies)
                .where(currencies.c.tenant_id == tenant)
                .order_by(currencies.c.code)
            ).all()
        return [_currency_public(r) for r in rows]

    def set_purchase_rules(self, tenant: str, code: str, rules: PurchaseRules) -> CurrencyPublic:
        """Set the per-wallet purchase limits of a purchased currency (None: no limit)."""
        with writer(self.engine).begin() as conn:
            lock_head(conn, tenant)
            where = (currencies.c.tenant_id == tenant, currencies.c.code == code)
            row = conn.execute(select(currencies).where(*where)).first()
            if row is None:
                raise ledger_problem("currency-not-found", f"no currency {code!r}")
            if row.kind != "purchased":
                raise ledger_problem("not-purchasable", f"{code} is not a purchased currency")
            conn.execute(update(currencies).where(*where).values(**rules.model_dump()))
            return _currency_public(conn.execute(select(currencies).where(*where)).one())

    def purchase(self, tenant: str, spec: PurchaseCreate) -> PurchasePublic:
        """Credit yen + premium points to a wallet as one linked chain (see purchase.py).

        Same id and body again: the first purchase (``created=False``), even if a limit has
        been reached since; same id, other body → ``id-conflict``. Refusals raise the
        ledger Problem (``purchase-limit-exceeded``, ``premium-budget-exhausted``, …) and
        write nothing."""
        ids = (
            derived_id(tenant, "purchase", spec.id, "yen"),
            derived_id(tenant, "purchase", spec.id, "premium"),
        )
        with writer(self.engine).begin() as conn:
            results = apply_purchase(conn, tenant, spec, ids, now_us())
            expiry_days = conn.execute(
                select(currencies.c.expiry_days).where(
                    currencies.c.tenant_id == tenant, currencies.c.code == spec.currency
                )
            ).scalar_one()
        return purchase_public(spec, results, expiry_days)

    def open_account(self, tenant: str, spec: AccountCreate) -> AccountPublic:
        """Open an account; opening it again with the same settings returns it."""
        with writer(self.engine).begin() as conn:
            if not conn.execute(
                select(currencies.c.code).where(
                    currencies.c.tenant_id == tenant, currencies.c.code == spec.currency
                )
            ).first():
                raise ledger_problem("currency-not-found", f"no currency {spec.currency!r}")
            row = self._account_row(conn, tenant, spec.code)
            if row is None:
                conn.execute(insert(accounts).values(**_account_values(tenant, spec)))
                row = self._account_row(conn, tenant, spec.code)
            elif any(
                getattr(row, k) != v for k, v in spec.model_dump(mode="json").items() if k != "name"
            ):
                raise ledger_problem(
                    "account-conflict", f"account {spec.code!r} exists with other settings"
                )
        return _account_public(row)

    def open_accounts(self, tenant: str, specs: Sequence[AccountCreate]) -> int:
        """Open many accounts in one transaction (existing codes are left alone); returns how many were new."""
        with writer(self.engine).begin() as conn:
            known = set(
                conn.execute(
                    select(currencies.c.code).where(currencies.c.tenant_id == tenant)
                ).scalars()
            )
            for spec in specs:
                if spec.currency not in known:
                    raise ledger_problem("currency-not-found", f"no currency {spec.currency!r}")
            existing = set()
            codes = [s.code for s in specs]
            for i in range(0, len(codes), 500):
                existing.update(
                    conn.execute(
                        select(accounts.c.code).where(
                            accounts.c.tenant_id == tenant, accounts.c.code.in_(codes[i : i + 500])
                        )
                    ).scalars()
                )
            new = [_account_values(tenant, s) for s in specs if s.code not in existing]
            if new:
                conn.execute(insert(accounts), new)
        return len(new)

    def close_account(self, tenant: str, code: str) -> AccountPublic:
        """Close an account: no transfer may debit or credit it afterwards (voids still may)."""
        with writer(self.engine).begin() as conn:
            lock_head(conn, tenant)
            if self._account_row(conn, tenant, code) is None:
                raise ledger_problem("account-not-found", f"no account {code!r}")
            conn.execute(
                update(accounts)
                .where(accounts.c.tenant_id == tenant, accounts.c.code == code)
                .values(closed=True)
            )
            return _account_public(self._account_row(conn, tenant, code))

    def get_account(self, tenant: str, code: str) -> AccountPublic:
        with self.engine.connect() as conn:
            row = self._account_row(conn, tenant, code)
        if row is None:
            raise ledger_problem("account-not-found", f"no account {code!r}")
        return _account_public(row)

    def list_accounts(
        self,
        tenant: str,
        *,
        kind: str | None = None,
        currency: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[AccountPublic]:
        query = select(accounts).where(accounts.c.tenant_id == tenant)
        if kind:
            query = query.where(accounts.c.kind == kind)
        if currency:
            query = query.where(accounts.c.currency == currency)
        if after:
            query = query.where(accounts.c.code > after)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(accounts.c.code).limit(limit)).all()
        return [_account_public(r) for r in rows]

    @staticmethod
    def _account_row(conn: Any, tenant: str, code: str) -> Any:
        return conn.execute(
            select(accounts).where(accounts.c.tenant_id == tenant, accounts.c.code == code)
        ).first()

    # --- transfers ---------------------------------------------------------------------------

    def post_transfers(
        self, tenant: str, items: Sequence[TransferCreate | dict[str, Any]]
    ) -> list[TransferResult]:
        """Apply a batch in one transaction; one result per item, in order.

        Linked chains (``linked=True`` up to the first transfer without it) are all or
        nothing; every other transfer stands alone. Nothing is written for a failed one.
        """
        if len(items) > MAX_BATCH:
            raise ledger_problem("invalid-request", f"at most {MAX_BATCH} transfers per batch")
        prepared = [_prepare(i) for i in items]
        if not prepared:
            return []
        if all(p.invalid for p in prepared):
            return Batch.fail_all(prepared)
        with writer(self.engine).begin() as conn:
            return apply_batch(conn, tenant, prepared)

    def post_transfer(self, tenant: str, item: TransferCreate | dict[str, Any]) -> TransferResult:
        """Apply one transfer, sharing a transaction with concurrent callers (group commit).

        Returns the result (``created`` or ``exists``); raises the ledger Problem when the
        transfer fails. A linked transfer cannot be sent alone.
        """
        result: TransferResult = self.submit_transfer(tenant, item).result()
        if result.status == "failed":
            raise result_problem(result)
        return result

    def submit_transfer(
        self, tenant: str, item: TransferCreate | dict[str, Any]
    ) -> Future[TransferResult]:
        """Queue one transfer for the group commit; the future holds its result (callers
        on an event loop: :meth:`post_transfer_async`). Bad input raises at once."""
        future: Future[TransferResult] = Future()
        self._enqueue(tenant, item, future)
        return future

    async def post_transfer_async(
        self, tenant: str, item: TransferCreate | dict[str, Any]
    ) -> TransferResult:
        """:meth:`submit_transfer` for callers on an event loop: the result (``failed``
        too, as from ``post_transfers``). The writer wakes each loop once per group, not
        once per transfer. Bad input raises at once."""
        future: asyncio.Future[TransferResult] = asyncio.get_running_loop().create_future()
        self._enqueue(tenant, item, future)
        return await future

    def _enqueue(self, tenant: str, item: TransferCreate | dict[str, Any], waiter: Waiter) -> None:
        prepared = _prepare(item)
        if prepared.invalid:
            raise ledger_problem("invalid-transfer", prepared.invalid[1])
        if prepared.linked:
            raise ledger_problem(
                "linked-chain-open", "send linked transfers together with post_transfers"
            )
        self._ensure_writer()
        self._queue.put((tenant, prepared, waiter))

    def _ensure_writer(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._writer_loop, name="kizuna-ledger-writer", daemon=True
                    )
                    self._thread.start()
                    if self.engine.dialect.name == "sqlite":
                        threading.Thread(
                            target=self._checkpoint_loop,
                            name="kizuna-ledger-checkpointer",
                            daemon=True,
                        ).start()

    def _writer_loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < _GROUP_MAX:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            by_tenant: dict[str, list[tuple[Item, Waiter]]] = defaultdict(list)
            for tenant, item, future in batch:
                by_tenant[tenant].append((item, future))
            for tenant in sorted(by_tenant):
                self._commit_group(tenant, by_tenant[tenant])

    def _open_writer_connection(self) -> Connection:
        conn = writer(self.engine).connect()
        if self.engine.dialect.name == "sqlite":
            # A commit that crosses SQLite's WAL threshold copies the WAL into the database
            # and syncs both; every caller of the group waited for that (commits of 90 to
            # 500 ms under wrk on the shared disk). The checkpointer thread does it instead.
            conn.connection.driver_connection.execute("PRAGMA wal_autocheckpoint=0")
        return conn

    def _checkpoint_loop(self) -> None:
        """SQLite: copy the WAL into the database every second while the writer writes.

        PASSIVE never waits for, nor blocks, the writer or readers; the WAL restarts from
        its beginning once a checkpoint has copied all of it."""
        seen = -1
        while True:
            time.sleep(1.0)
            if self._groups == seen:
                continue
            seen = self._groups
            try:
                with self.engine.connect() as conn:
                    conn.connection.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except Exception:  # noqa: BLE001 - retried on the next tick
                log.exception("ledger WAL checkpoint failed")

    def _commit_group(self, tenant: str, group: list[tuple[Item, Waiter]]) -> None:
        try:
            # The writer thread keeps one connection: no pool checkout (nor PostgreSQL's
            # pre-ping round trip) per group.
            if self._conn is None:
                self._conn = self._open_writer_connection()
            with self._conn.begin():
                results = apply_batch(self._conn, tenant, [item for item, _ in group])
        except Exception as exc:  # noqa: BLE001 - a database error fails the whole group
            log.exception("ledger group commit failed")
            if self._conn is not None:  # it may be broken: the next group opens another
                self._conn.invalidate()
                self._conn.close()
                self._conn = None
            deliver([(waiter, exc) for _, waiter in group])
            return
        self._groups += 1
        deliver([(waiter, result) for (_, waiter), result in zip(group, results, strict=True)])

    def get_transfer(self, tenant: str, transfer_id: str) -> TransferPublic:
        from kizuna.ledger.schemas import transfer_id as canonical

        try:
            tid = canonical(transfer_id)
        except ValueError as exc:
            raise ledger_problem("invalid-request", str(exc)) from None
        with self.engine.connect() as conn:
            row = _transfer_rows(conn, tenant, transfers.c.id == tid).first()
        if row is None:
            raise ledger_problem("transfer-not-found", f"no transfer {tid}")
        return transfer_public(row._mapping, row.debit_code, row.credit_code)

    def list_transfers(
        self,
        tenant: str,
        *,
        account: str | None = None,
        after_seq: int = -1,
        limit: int = 100,
    ) -> list[TransferPublic]:
        """Transfers in log order (optionally of one account), from ``after_seq`` + 1."""
        with self.engine.connect() as conn:
            cond = [transfers.c.seq > after_seq]
            if account is not None:
                row = self._account_row(conn, tenant, account)
                if row is None:
                    raise ledger_problem("account-not-found", f"no account {account!r}")
                cond.append((transfers.c.debit_id == row.id) | (transfers.c.credit_id == row.id))
            found = _transfer_rows(conn, tenant, *cond).order_by(transfers.c.seq).limit(limit).all()
        return [transfer_public(r._mapping, r.debit_code, r.credit_code) for r in found]

    # --- lots and expiry -----------------------------------------------------------------------

    def lots(self, tenant: str, account: str, *, include_spent: bool = False) -> list[LotPublic]:
        with self.engine.connect() as conn:
            row = self._account_row(conn, tenant, account)
            if row is None:
                raise ledger_problem("account-not-found", f"no account {account!r}")
            query = select(lots).where(lots.c.account_id == row.id)
            if not include_spent:
                query = query.where(lots.c.remaining > 0)
            found = conn.execute(query.order_by(lots.c.expires_us, lots.c.id)).all()
        return [
            LotPublic(
                lot_id=r.id,
                source_seq=r.source_seq,
                amount=r.amount,
                remaining=r.remaining,
                expires_at=None if r.expires_us is None else from_us(r.expires_us),
            )
            for r in found
        ]

    def spendable(self, tenant: str, codes: Sequence[str]) -> dict[str, int]:
        """What each wallet may spend now: its unexpired lots' remainders (held points are
        already drawn). One query for all of them; 0 for an unknown account."""
        ts = now_us()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(accounts.c.code, func.sum(lots.c.remaining))
                .join(lots, lots.c.account_id == accounts.c.id)
                .where(
                    accounts.c.tenant_id == tenant,
                    accounts.c.code.in_(list(codes)),
                    lots.c.remaining > 0,
                    or_(lots.c.expires_us.is_(None), lots.c.expires_us > ts),
                )
                .group_by(accounts.c.code)
            ).all()
        return dict.fromkeys(codes, 0) | {code: int(n) for code, n in rows}

    def expiring(self, tenant: str, account: str) -> list[ExpiryPublic]:
        """What expires when: the wallet's unspent points grouped by expiry time, soonest first."""
        totals: dict[datetime, int] = defaultdict(int)
        for lot in self.lots(tenant, account):
            if lot.expires_at is not None:
                totals[lot.expires_at] += lot.remaining
        return [ExpiryPublic(expires_at=t, amount=n) for t, n in sorted(totals.items())]

    def expire_lots(self, tenant: str, *, now: datetime | None = None) -> list[TransferResult]:
        """Move every expired remainder to its currency's expiry sink, one transfer per wallet.

        The transfer ids derive from the lots swept, so running the job twice (or in two
        processes at once) moves nothing twice.
        """
        ts = to_us(now) if now else now_us()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    lots.c.account_id,
                    lots.c.id,
                    lots.c.remaining,
                    accounts.c.code,
                    accounts.c.currency,
                )
                .join(accounts, accounts.c.id == lots.c.account_id)
                .where(
                    lots.c.tenant_id == tenant,
                    lots.c.remaining > 0,
                    lots.c.expires_us.is_not(None),
                    lots.c.expires_us <= ts,
                )
                .order_by(lots.c.account_id, lots.c.id)
            ).all()
        per_account: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for r in rows:
            per_account[(r.code, r.currency)].append(r)
        items = []
        for (code, currency), found in sorted(per_account.items()):
            amount = sum(r.remaining for r in found)
            key = ",".join(f"{r.id}:{r.remaining}" for r in found)
            items.append(
                Item(
                    TransferCreate(
                        id=derived_id(tenant, "expire", code, key),
                        debit_account=code,
                        credit_account=system_accounts(currency)["expiry"],
                        amount=amount,
                        currency=currency,
                        code="expiry",
                    ),
                    sweep=True,
                )
            )
        return self._apply_internal(tenant, items, ts)

    def void_expired_pending(
        self, tenant: str, *, now: datetime | None = None
    ) -> list[TransferResult]:
        """Void every pending transfer whose timeout has passed (a job; safe to rerun)."""
        ts = to_us(now) if now else now_us()
        with self.engine.connect() as conn:
            resolved = select(transfers.c.pending_id).where(
                transfers.c.tenant_id == tenant, transfers.c.pending_id.is_not(None)
            )
            rows = conn.execute(
                select(transfers.c.id, transfers.c.ts_us, transfers.c.timeout_s).where(
                    transfers.c.tenant_id == tenant,
                    transfers.c.kind == "pending",
                    transfers.c.timeout_s.is_not(None),
                    transfers.c.id.not_in(resolved),
                )
            ).all()
        items = [
            Item(
                TransferCreate(
                    id=derived_id(tenant, "timeout", r.id), void_pending_id=r.id, code="timeout"
                )
            )
            for r in rows
            if r.ts_us + r.timeout_s * 1_000_000 <= ts
        ]
        return self._apply_internal(tenant, items, ts)

    def _apply_internal(self, tenant: str, items: list[Item], ts: int) -> list[TransferResult]:
        results: list[TransferResult] = []
        for i in range(0, len(items), MAX_BATCH):
            with writer(self.engine).begin() as conn:
                results += apply_batch(conn, tenant, items[i : i + MAX_BATCH], ts)
        return results

    # --- audit ---------------------------------------------------------------------------------

    def checkpoint(self, tenant: str) -> CheckpointPublic | None:
        """Sign the current log head (returns the existing checkpoint if already signed)."""
        return audit.sign_checkpoint(self.engine, self.keys, tenant)

    def checkpoints(self, tenant: str, *, limit: int = 100) -> list[CheckpointPublic]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(checkpoints)
                .where(checkpoints.c.tenant_id == tenant)
                .order_by(checkpoints.c.size.desc())
                .limit(limit)
            ).all()
        return [audit.checkpoint_public(tenant, r) for r in rows]

    def public_key(self, tenant: str) -> bytes:
        """The tenant's Ed25519 public key (raw 32 bytes), created on first use."""
        return public_bytes(self.keys.private_key(tenant))

    def receipt(self, tenant: str, transfer_id: str) -> Receipt:
        """The transfer, its leaf, and its inclusion proof under the latest checkpoint
        (a checkpoint is signed now if none covers the transfer yet)."""
        transfer = self.get_transfer(tenant, transfer_id)
        with self.engine.connect() as conn:
            cp = conn.execute(
                select(checkpoints)
                .where(checkpoints.c.tenant_id == tenant, checkpoints.c.size > transfer.seq)
                .order_by(checkpoints.c.size.desc())
                .limit(1)
            ).first()
        if cp is None:
            self.checkpoint(tenant)
            return self.receipt(tenant, transfer_id)
        from kizuna.ledger.apply import leaf_bytes

        with self.engine.connect() as conn:
            leaves = audit.leaf_hashes(conn, tenant, cp.size)
            row = _transfer_rows(conn, tenant, transfers.c.seq == transfer.seq).one()
        leaf = leaf_bytes(tenant, row._mapping, row.debit_code, row.credit_code)
        proof = merkle.inclusion_proof(leaves, transfer.seq, cp.size)
        return Receipt(
            transfer=transfer,
            leaf=leaf.decode(),
            leaf_hash=merkle.leaf_hash(leaf).hex(),
            index=transfer.seq,
            checkpoint=audit.checkpoint_public(tenant, cp),
            inclusion_proof=[p.hex() for p in proof],
        )

    def consistency_proof(self, tenant: str, old_size: int, new_size: int) -> ConsistencyProof:
        """RFC 9162 proof that the log of ``new_size`` extends the log of ``old_size``."""
        with self.engine.connect() as conn:
            head = conn.execute(
                select(func.count()).select_from(transfers).where(transfers.c.tenant_id == tenant)
            ).scalar_one()
            if not 0 < old_size <= new_size <= head:
                raise ledger_problem(
                    "invalid-request", f"need 0 < old_size <= new_size <= {head} (the log size)"
                )
            leaves = audit.leaf_hashes(conn, tenant, new_size)
        proof = merkle.consistency_proof(leaves, old_size, new_size)
        return ConsistencyProof(
            old_size=old_size, new_size=new_size, proof=[p.hex() for p in proof]
        )

    # --- merchant settlement ---------------------------------------------------------------

    def set_merchant_terms(self, tenant: str, code: str, terms: MerchantTerms) -> MerchantTerms:
        """Fee rate, cycle (monthly by default) and bank account of a merchant account."""
        return settlement.set_terms(self.engine, tenant, code, terms)

    def statement(self, tenant: str, code: str, day: date) -> SettlementPublic:
        """The statement of the merchant's period containing ``day`` (paid or not yet)."""
        return settlement.statement(self.engine, tenant, code, day)

    def statements(
        self, tenant: str, days: Sequence[date], codes: Sequence[str] | None = None
    ) -> dict[tuple[str, date], SettlementPublic]:
        """The statements of many merchant accounts at once, keyed by (code, day): for each
        of ``codes`` (every merchant account of the tenant when None) and each of ``days``,
        what :meth:`statement` gives, from a few set-based queries."""
        return settlement.statements(self.engine, tenant, days, codes)

    def settle_all(
        self, tenant: str, day: date, codes: Sequence[str] | None = None
    ) -> dict[str, SettlementPublic | None]:
        """:meth:`settle` for each of ``codes`` (every merchant account when None) in one
        transaction; None for an account with nothing to settle. A period not over yet or
        a refused transfer raises, and nothing is settled."""
        return settlement.settle_all(self.engine, tenant, day, codes)

    def settle(self, tenant: str, code: str, day: date) -> SettlementPublic:
        """Pay out the (finished) period containing ``day``; a second call returns the first."""
        return settlement.settle(self.engine, tenant, code, day)

    def settlements(
        self, tenant: str, since: date | None = None, until: date | None = None
    ) -> list[SettlementPublic]:
        return [s for s, _, _ in settlement.list_settlements(self.engine, tenant, since, until)]

    def settlements_csv(
        self, tenant: str, since: date | None = None, until: date | None = None
    ) -> bytes:
        """The settlements as CSV for Excel (UTF-8 with BOM, CRLF)."""
        return settlement.settlements_csv(
            settlement.list_settlements(self.engine, tenant, since, until)
        )

    def settlements_zengin(
        self,
        tenant: str,
        origin: Originator,
        transfer_date: date,
        since: date | None = None,
        until: date | None = None,
    ) -> bytes:
        """The settlements as a 全銀協 総合振込 file (cp932, 120-byte records)."""
        return settlement.settlements_zengin(
            settlement.list_settlements(self.engine, tenant, since, until), origin, transfer_date
        )

    def verify(
        self, tenant: str | None = None, trusted_keys: dict[str, bytes] | None = None
    ) -> VerifyReport:
        """Recompute log, balances, lots and checkpoints from the transfers (see audit.verify)."""
        return audit.verify(self.engine, self.keys, tenant, trusted_keys)


def _currency_public(row: Any) -> CurrencyPublic:
    base = CurrencyCreate.model_validate(row, from_attributes=True)
    return CurrencyPublic(**base.model_dump(), purchase_rules=rules_of(row))


def _prepare(item: TransferCreate | dict[str, Any]) -> Item:
    if isinstance(item, TransferCreate):
        return Item(item)
    try:
        return Item(TransferCreate.model_validate(item))
    except ValidationError as exc:
        raw = item.get("id") if isinstance(item, dict) else None
        linked = bool(item.get("linked")) if isinstance(item, dict) else False
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return Item(None, invalid=(str(raw) if raw is not None else None, detail, linked))


_debit, _credit = accounts.alias("d"), accounts.alias("c")
# Built once: an alias's column collection is rebuilt on first use, which cost more than
# the query itself when every call aliased the accounts table anew.
_TRANSFERS_WITH_CODES = (
    select(transfers, _debit.c.code.label("debit_code"), _credit.c.code.label("credit_code"))
    .join(_debit, _debit.c.id == transfers.c.debit_id)
    .join(_credit, _credit.c.id == transfers.c.credit_id)
)


def _transfer_rows(conn: Any, tenant: str, *conditions: Any) -> Any:
    return _Query(conn, _TRANSFERS_WITH_CODES.where(transfers.c.tenant_id == tenant, *conditions))


class _Query:
    """A select bound to a connection: ``.first()``, ``.one()``, ``.all()``, chainable."""

    def __init__(self, conn: Any, query: Any) -> None:
        self.conn, self.query = conn, query

    def order_by(self, *args: Any) -> _Query:
        return _Query(self.conn, self.query.order_by(*args))

    def limit(self, n: int) -> _Query:
        return _Query(self.conn, self.query.limit(n))

    def first(self) -> Any:
        return self.conn.execute(self.query).first()

    def one(self) -> Any:
        return self.conn.execute(self.query).one()

    def all(self) -> list[Any]:
        return self.conn.execute(self.query).all()


def _account_values(tenant: str, spec: AccountCreate) -> dict[str, Any]:
    return {
        "tenant_id": tenant,
        "code": spec.code,
        "currency": spec.currency,
        "kind": spec.kind.value,
        "name": spec.name,
        "allow_negative": spec.kind == AccountKind.ISSUANCE,
        "max_credits": spec.max_credits,
        "max_debits": spec.max_debits,
        "daily_send_limit": spec.daily_send_limit,
        "day_key": 0,
        "day_sent": 0,
        "debits_posted": 0,
        "credits_posted": 0,
        "debits_pending": 0,
        "credits_pending": 0,
        "closed": False,
        "created_us": now_us(),
    }

"""Apply one batch of transfers in one transaction (TigerBeetle's model, on SQL).

Order of work, the same in every process, so batches never deadlock:

1. lock the tenant's log head (``ledger_logs``; on SQLite the whole database is already
   locked by ``BEGIN IMMEDIATE``) — batches of one tenant are serialised here;
2. read the transfers whose ids the batch uses (idempotency) or resolves (two-phase);
3. lock every touched account, in ascending id order (``SELECT ... FOR UPDATE``);
4. read the lots of the resident wallets the batch debits;
5. compute everything in Python: each transfer checks the balance rules against the
   state left by the ones before it; a failed transfer (or linked chain) is undone from
   an undo log and reported, and the others carry on;
6. write: the new transfer rows with their Merkle leaf hashes, each touched account once,
   the lots and lot spends, and the new log head — then the caller commits once.
"""

from __future__ import annotations

import gc
import hashlib
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import Connection

from kizuna.ledger import merkle
from kizuna.ledger.errors import PREFIX, ledger_problem
from kizuna.ledger.models import logs, lot_spends, lots, transfers
from kizuna.ledger.schemas import TransferCreate, TransferError, TransferPublic, TransferResult
from kizuna.problems import Problem
from kizuna.storage import is_postgres
from kizuna.storage.bulk import allocate_keys, bulk_insert
from kizuna.storage.driver import execute, executemany, fetch

JST = timezone(timedelta(hours=9))
MAX_AMOUNT = (1 << 63) - 1
_CHUNK = 1000

# Statements of ``Batch.load``, run on the driver: ``?`` marks a parameter, ``{in}``
# membership in a list (see ``Batch._select_in``).
_EXISTING_COLUMNS = (
    "seq", "id", "currency", "debit_id", "credit_id", "amount", "kind", "pending_id",
    "timeout_s", "linked", "code", "ref", "memo", "expires_us", "ts_us", "body_hash",
    "debit_code", "credit_code",
)  # fmt: skip
_EXISTING_SELECT = (
    "SELECT t.seq, t.id, t.currency, t.debit_id, t.credit_id, t.amount, t.kind, t.pending_id,"
    " t.timeout_s, t.linked, t.code, t.ref, t.memo, t.expires_us, t.ts_us, t.body_hash,"
    " d.code, c.code FROM "
)
_EXISTING_JOINS = (
    " JOIN ledger_accounts d ON d.id = t.debit_id JOIN ledger_accounts c ON c.id = t.credit_id"
)
_EXISTING_SQL = (
    _EXISTING_SELECT
    + "ledger_transfers t"
    + _EXISTING_JOINS
    + " WHERE t.tenant_id = ? AND t.id {in}"
)
_RESOLVED_SQL = "SELECT pending_id FROM ledger_transfers WHERE tenant_id = ? AND pending_id {in}"
_SPENDS_SQL = "SELECT seq, lot_id, amount FROM ledger_lot_spends WHERE tenant_id = ? AND seq {in}"
_ACCOUNT_SELECT = (
    "SELECT id, code, currency, kind, allow_negative, max_credits, max_debits,"
    " daily_send_limit, day_key, day_sent, debits_posted, credits_posted, debits_pending,"
    " credits_pending, closed FROM ledger_accounts"
)
_ACCOUNTS_BY_CODE_SQL = _ACCOUNT_SELECT + " WHERE tenant_id = ? AND code {in}"
_ACCOUNTS_BY_ID_SQL = _ACCOUNT_SELECT + " WHERE tenant_id = ? AND id {in}"
_LOT_COLUMNS = "id, account_id, source_seq, expires_us, amount, remaining"
_LOTS_SQL = f"SELECT {_LOT_COLUMNS} FROM ledger_lots WHERE remaining > 0 AND account_id {{in}}"
_LOTS_BY_ID_SQL = f"SELECT {_LOT_COLUMNS} FROM ledger_lots WHERE id {{in}}"

# PostgreSQL runs each of them as one index probe per key: ``unnest(list)`` joined
# LATERAL to a subquery that ``LIMIT 1`` (unique keys) or ``OFFSET 0`` keeps from being
# flattened into a join. With a plain ``= ANY(list)`` the planner, on the statistics of a
# table that grew since its last ANALYZE, scanned every transfer of the tenant to find a
# batch's ids (4 ms a batch at 14,000 transfers, growing with the log) and every account
# to lock a payment's two. Parameters: the list, then the tenant.
_PG_PROBES = {
    _EXISTING_SQL: _EXISTING_SELECT
    + "unnest(?::text[]) AS k(id) CROSS JOIN LATERAL (SELECT * FROM ledger_transfers"
    " WHERE tenant_id = ? AND id = k.id LIMIT 1) t" + _EXISTING_JOINS,
    _RESOLVED_SQL: "SELECT x.pending_id FROM unnest(?::text[]) AS k(id) CROSS JOIN LATERAL"
    " (SELECT pending_id FROM ledger_transfers WHERE tenant_id = ? AND pending_id = k.id"
    " LIMIT 1) x",
    _SPENDS_SQL: "SELECT x.seq, x.lot_id, x.amount FROM unnest(?::bigint[]) AS k(seq)"
    " CROSS JOIN LATERAL (SELECT seq, lot_id, amount FROM ledger_lot_spends"
    " WHERE tenant_id = ? AND seq = k.seq OFFSET 0) x",
    _LOTS_SQL: f"SELECT x.* FROM unnest(?::bigint[]) AS k(id) CROSS JOIN LATERAL (SELECT"
    f" {_LOT_COLUMNS} FROM ledger_lots WHERE account_id = k.id AND remaining > 0 OFFSET 0) x",
    _LOTS_BY_ID_SQL: f"SELECT x.* FROM unnest(?::bigint[]) AS k(id) CROSS JOIN LATERAL"
    f" (SELECT {_LOT_COLUMNS} FROM ledger_lots WHERE id = k.id LIMIT 1) x",
}
# Every account a batch touches, locked in id order (so no two batches deadlock): the
# codes probed one by one in the tenant, the ids (from pending transfers the batch read in
# the tenant) by primary key. Parameters: codes, tenant, ids.
_ACCOUNTS_PG_SQL = (
    _ACCOUNT_SELECT + " WHERE id = ANY(ARRAY(SELECT x.id FROM unnest(?::text[]) AS k(code)"
    " CROSS JOIN LATERAL (SELECT id FROM ledger_accounts WHERE tenant_id = ? AND code = k.code"
    " LIMIT 1) x) || ?::bigint[]) ORDER BY id FOR UPDATE"
)
_CURRENCIES_SQL = "SELECT code, expiry_days FROM ledger_currencies WHERE tenant_id = ?"
_HEAD_SQL = "SELECT size, frontier FROM ledger_logs WHERE tenant_id = ?"
_HEAD_UPDATE_SQL = "UPDATE ledger_logs SET size = ?, frontier = ?, root = ? WHERE tenant_id = ?"


def now_us() -> int:
    return int(datetime.now(UTC).timestamp() * 1_000_000)


def to_us(value: datetime) -> int:
    if value.tzinfo is None:  # a naive time is a Japanese wall-clock time
        value = value.replace(tzinfo=JST)
    return int(value.timestamp() * 1_000_000)


@lru_cache(maxsize=4096)
def from_us(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1_000_000, UTC)


def jst_day(ts: int) -> int:
    d = datetime.fromtimestamp(ts / 1_000_000, JST)
    return d.year * 10000 + d.month * 100 + d.day


def body_hash(item: TransferCreate) -> str:
    body = item.model_dump(mode="json", exclude={"id"}, exclude_defaults=True)
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def leaf_bytes(tenant: str, row: dict[str, Any], debit_code: str, credit_code: str) -> bytes:
    """The exact bytes a transfer's Merkle leaf hashes (canonical JSON, keys sorted)."""
    return orjson.dumps(
        {
            "tenant": tenant,
            "seq": row["seq"],
            "id": row["id"],
            "kind": row["kind"],
            "currency": row["currency"],
            "debit": debit_code,
            "credit": credit_code,
            "amount": row["amount"],
            "pending_id": row["pending_id"],
            "timeout_s": row["timeout_s"],
            "linked": row["linked"],
            "code": row["code"],
            "ref": row["ref"],
            "memo": row["memo"],
            "expires_us": row["expires_us"],
            "ts_us": row["ts_us"],
        },
        option=orjson.OPT_SORT_KEYS,
    )


class _Account:
    __slots__ = (
        "id",
        "code",
        "currency",
        "kind",
        "allow_negative",
        "max_credits",
        "max_debits",
        "daily_send_limit",
        "day_key",
        "day_sent",
        "dp",
        "cp",
        "dpend",
        "cpend",
        "closed",
        "lots",
        "dirty",
    )

    def __init__(
        self,
        id: int,
        code: str,
        currency: str,
        kind: str,
        allow_negative: bool,
        max_credits: int | None,
        max_debits: int | None,
        daily_send_limit: int | None,
        day_key: int,
        day_sent: int,
        dp: int,
        cp: int,
        dpend: int,
        cpend: int,
        closed: bool,
    ) -> None:
        self.id = id
        self.code = code
        self.currency = currency
        self.kind = kind
        self.allow_negative = allow_negative
        self.max_credits = max_credits
        self.max_debits = max_debits
        self.daily_send_limit = daily_send_limit
        self.day_key = day_key
        self.day_sent = day_sent
        self.dp = dp
        self.cp = cp
        self.dpend = dpend
        self.cpend = cpend
        self.closed = closed
        self.lots: list[_Lot] | None = None  # resident wallets: sorted spend order
        self.dirty = False


class _Lot:
    __slots__ = ("id", "account_id", "source_seq", "expires", "amount", "remaining", "new", "dirty")

    def __init__(
        self,
        id: int,
        account_id: int,
        source_seq: int,
        expires: int | None,
        amount: int,
        remaining: int,
    ) -> None:
        self.id = id
        self.account_id = account_id
        self.source_seq = source_seq
        self.expires = expires
        self.amount = amount
        self.remaining = remaining
        self.new = False
        self.dirty = False

    def order(self) -> tuple[bool, int, int]:
        return (self.expires is None, self.expires or 0, self.id)


@dataclass
class Item:
    """A transfer to apply; ``sweep`` ones (expiry job) may draw only on expired lots."""

    req: TransferCreate | None
    sweep: bool = False
    hash: str = ""
    # Input that failed validation: it fails (and fails its linked chain) when applied.
    invalid: tuple[str | None, str, bool] | None = None  # (raw id, detail, linked)

    @property
    def linked(self) -> bool:
        return self.invalid[2] if self.invalid else bool(self.req and self.req.linked)

    @property
    def id(self) -> str | None:
        return self.invalid[0] if self.invalid else self.req.id  # type: ignore[union-attr]


@dataclass
class _Pending:
    seq: int
    id: str
    debit_id: int
    credit_id: int
    amount: int
    currency: str
    kind: str
    timeout_s: int | None
    ts_us: int
    spends: list[tuple[int, int]] = field(default_factory=list)  # (lot id, amount)


class _Fail(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _error(code: str, detail: str | None) -> TransferError:
    problem = ledger_problem(code, detail)
    return TransferError(
        type=problem.type, title=problem.title, detail=detail, status=problem.status
    )


def lock_head(conn: Connection, tenant: str) -> merkle.Frontier:
    """Lock (creating if needed) the tenant's log head; every write batch starts here."""
    pg = is_postgres(conn)
    sql = _HEAD_SQL + (" FOR UPDATE" if pg else "")
    rows = fetch(conn, sql, (tenant,))
    if not rows:
        if pg:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        conn.execute(
            dialect_insert(logs)
            .values(tenant_id=tenant, size=0, frontier=b"", root=merkle.EMPTY_ROOT)
            .on_conflict_do_nothing()
        )
        rows = fetch(conn, sql, (tenant,))
    size, frontier = rows[0]
    return merkle.Frontier.from_bytes(size, bytes(frontier))


def fast_model(cls: Any, values: dict[str, Any]) -> Any:
    """A Pydantic model from values the ledger itself produced and already checked: like
    ``model_construct`` with every field given, at a fraction of its cost (hot path)."""
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", set(values))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


def result(id: str | None, status: str, transfer: Any = None, error: Any = None) -> TransferResult:
    return fast_model(
        TransferResult, {"id": id, "status": status, "transfer": transfer, "error": error}
    )


def transfer_public(row: Any, debit_code: str, credit_code: str) -> TransferPublic:
    return fast_model(
        TransferPublic,
        dict(
            id=row["id"],
            seq=row["seq"],
            kind=row["kind"],
            debit_account=debit_code,
            credit_account=credit_code,
            amount=row["amount"],
            currency=row["currency"],
            code=row["code"],
            pending_id=row["pending_id"],
            timeout_seconds=row["timeout_s"],
            linked=row["linked"],
            ref=row["ref"],
            memo=row["memo"],
            expires_at=None if row["expires_us"] is None else from_us(row["expires_us"]),
            timestamp=from_us(row["ts_us"]),
        ),
    )


class Batch:
    """One batch of one tenant, applied inside the caller's write transaction."""

    def __init__(self, conn: Connection, tenant: str, items: list[Item], ts: int) -> None:
        self.conn = conn
        self.tenant = tenant
        self.items = items
        self.ts = ts
        self.pg = is_postgres(conn)
        self.by_code: dict[str, _Account] = {}
        self.by_id: dict[int, _Account] = {}
        self.expiry_days: dict[str, int | None] = {}  # currency code → its points' lifetime
        self.existing: dict[str, Any] = {}  # id -> stored row mapping (+ codes)
        self.pendings: dict[str, _Pending] = {}
        self.resolved: set[str] = set()
        self.rows: list[dict[str, Any]] = []
        self.spends: list[tuple[int, _Lot, int]] = []  # (seq, lot, amount)
        self.new_lots: list[_Lot] = []
        self.created: dict[str, tuple[str, TransferPublic]] = {}
        self.undo: list[tuple[Any, str, Any]] = []
        self.next_temp_lot = -1

    @staticmethod
    def fail_all(items: list[Item]) -> list[TransferResult]:
        """Results for a batch in which nothing passed validation (no transaction needed)."""
        batch = Batch.__new__(Batch)
        return [batch._failed(i, "invalid-transfer", i.invalid[1]) for i in items]  # type: ignore[index]

    # --- reading and locking ------------------------------------------------------------

    def load(self, frontier: merkle.Frontier) -> None:
        self.frontier = frontier
        self.next_seq = frontier.size
        tenant = self.tenant
        ids: set[str] = set()
        codes: set[str] = set()
        for item in self.items:
            r = item.req
            if r is None:
                continue
            ids.add(r.id)
            for pid in (r.post_pending_id, r.void_pending_id):
                if pid:
                    ids.add(pid)
            if r.debit_account:
                codes.add(r.debit_account)
            if r.credit_account:
                codes.add(r.credit_account)
        account_ids: set[int] = set()
        for values in self._select_in(_EXISTING_SQL, sorted(ids), tenant):
            m = dict(zip(_EXISTING_COLUMNS, values, strict=True))
            m["linked"] = bool(m["linked"])
            self.existing[m["id"]] = m
            if m["kind"] == "pending":
                self.pendings[m["id"]] = _Pending(
                    m["seq"],
                    m["id"],
                    m["debit_id"],
                    m["credit_id"],
                    m["amount"],
                    m["currency"],
                    "pending",
                    m["timeout_s"],
                    m["ts_us"],
                )
                account_ids.update((m["debit_id"], m["credit_id"]))
        if self.pendings:
            self.resolved.update(
                v[0] for v in self._select_in(_RESOLVED_SQL, sorted(self.pendings), tenant)
            )
            by_seq = {p.seq: p for p in self.pendings.values() if p.id not in self.resolved}
            for seq, lot_id, amount in self._select_in(_SPENDS_SQL, sorted(by_seq), tenant):
                by_seq[seq].spends.append((lot_id, amount))
        # Lock the accounts in id order (one sorted statement on PostgreSQL, so no two
        # batches deadlock; SQLite's write lock already covers the whole database).
        if self.pg:
            found = self._fetch(_ACCOUNTS_PG_SQL, (sorted(codes), tenant, sorted(account_ids)))
        else:
            found = self._select_in(_ACCOUNTS_BY_CODE_SQL, sorted(codes), tenant)
            found += self._select_in(_ACCOUNTS_BY_ID_SQL, sorted(account_ids), tenant)
        for values in found:
            account = _Account(*values)
            self.by_code[account.code] = account
            self.by_id[account.id] = account
        self.expiry_days = dict(self._fetch(_CURRENCIES_SQL, (tenant,)))
        # Lots of every resident wallet the batch may draw on or give back to.
        wallets = sorted(a.id for a in self.by_id.values() if a.kind == "resident")
        for a in self.by_id.values():
            if a.kind == "resident":
                a.lots = []
        restore = {lot_id for p in self.pendings.values() for lot_id, _ in p.spends}
        found_lots = [_Lot(*values) for values in self._select_in(_LOTS_SQL, wallets)]
        restore -= {lot.id for lot in found_lots}
        found_lots += [
            _Lot(*values) for values in self._select_in(_LOTS_BY_ID_SQL, sorted(restore))
        ]
        by_id = self.by_id
        for lot in found_lots:
            by_id[lot.account_id].lots.append(lot)  # type: ignore[union-attr]
        self.lot_by_id: dict[int, _Lot] = {}
        for a in by_id.values():
            if a.lots:
                if len(a.lots) > 1:
                    a.lots.sort(key=_Lot.order)
                for lot in a.lots:
                    self.lot_by_id[lot.id] = lot

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return fetch(self.conn, sql, params)

    def _select_in(self, sql: str, values: list[Any], *params: Any) -> list[tuple[Any, ...]]:
        """Run ``sql`` whose ``{in}`` is membership in ``values``: its probe statement on
        PostgreSQL (``_PG_PROBES``, one short statement the driver parses once), chunks of
        ``IN (?, …)`` on SQLite."""
        if not values:
            return []
        if self.pg:
            return self._fetch(_PG_PROBES[sql], (values, *params))
        out: list[tuple[Any, ...]] = []
        for i in range(0, len(values), _CHUNK):
            chunk = values[i : i + _CHUNK]
            marks = f"IN ({', '.join('?' * len(chunk))})"
            out += self._fetch(sql.replace("{in}", marks), (*params, *chunk))
        return out

    # --- undo log -------------------------------------------------------------------------

    def _set(self, obj: Any, attr: str, value: Any) -> None:
        self.undo.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, value)

    def _mark(self) -> tuple[int, int, int, int, int, int]:
        return (
            len(self.undo),
            len(self.rows),
            len(self.spends),
            len(self.new_lots),
            self.next_seq,
            self.next_temp_lot,
        )

    def _rollback(self, mark: tuple[int, int, int, int, int, int]) -> None:
        n_undo, n_rows, n_spends, n_lots, seq, temp = mark
        while len(self.undo) > n_undo:
            obj, attr, old = self.undo.pop()
            if attr == "@remove":
                obj.remove(old)
            elif attr == "@discard":
                obj.discard(old)
            else:
                setattr(obj, attr, old)
        for row in self.rows[n_rows:]:
            self.created.pop(row["id"], None)
            self.pendings.pop(row["id"], None)
        del self.rows[n_rows:]
        del self.spends[n_spends:]
        for lot in self.new_lots[n_lots:]:
            self.lot_by_id.pop(lot.id, None)
        del self.new_lots[n_lots:]
        self.next_seq = seq
        self.next_temp_lot = temp

    # --- computing ------------------------------------------------------------------------

    def run(self) -> list[TransferResult]:
        items = self.items
        results: list[TransferResult | None] = [None] * len(items)
        for item in items:
            if item.req is not None:
                item.hash = body_hash(item.req)
        i = 0
        while i < len(items):
            j = i
            while items[j].linked and j + 1 < len(items):
                j += 1
            chain = range(i, j + 1)
            if items[j].linked:  # the batch ends inside a chain
                for k in chain:
                    results[k] = self._failed(
                        items[k],
                        "linked-chain-open",
                        "close the chain with a transfer that is not linked",
                    )
                break
            mark = self._mark()
            for k in chain:
                try:
                    results[k] = self._one(items[k])
                except _Fail as fail:
                    self._rollback(mark)
                    for other in chain:
                        if other != k:
                            results[other] = self._failed(
                                items[other],
                                "linked-event-failed",
                                f"transfer {items[k].id} of the chain failed: {fail.code}",
                            )
                    results[k] = self._failed(items[k], fail.code, fail.detail)
                    break
            i = j + 1
        return results  # type: ignore[return-value]

    def _failed(self, item: Item, code: str, detail: str) -> TransferResult:
        return result(id=item.id, status="failed", transfer=None, error=_error(code, detail))

    def _one(self, item: Item) -> TransferResult:
        if item.invalid is not None:
            raise _Fail("invalid-transfer", item.invalid[1])
        r = item.req
        assert r is not None
        done = self.created.get(r.id)
        if done is not None:
            if done[0] != item.hash:
                raise _Fail("id-conflict", f"transfer {r.id} was sent before with a different body")
            return result(id=r.id, status="exists", transfer=done[1], error=None)
        old = self.existing.get(r.id)
        if old is not None:
            if old["body_hash"] != item.hash:
                raise _Fail("id-conflict", f"transfer {r.id} was sent before with a different body")
            public = transfer_public(old, old["debit_code"], old["credit_code"])
            return result(id=r.id, status="exists", transfer=public, error=None)
        if r.post_pending_id or r.void_pending_id:
            return self._resolve(item)
        return self._plain(item)

    def _account(self, code: str | None, role: str) -> _Account:
        if not code:
            raise _Fail("invalid-transfer", f"{role}_account is required")
        account = self.by_code.get(code)
        if account is None:
            raise _Fail("account-not-found", f"no account {code!r}")
        return account

    def _plain(self, item: Item) -> TransferResult:
        r = item.req
        if r.amount is None or r.amount <= 0 or r.amount > MAX_AMOUNT:
            raise _Fail("invalid-transfer", "amount must be a positive integer")
        if r.timeout_seconds is not None and not r.pending:
            raise _Fail("invalid-transfer", "timeout_seconds applies to pending transfers only")
        if not r.currency:
            raise _Fail("invalid-transfer", "currency is required")
        debit = self._account(r.debit_account, "debit")
        credit = self._account(r.credit_account, "credit")
        if debit is credit:
            raise _Fail("invalid-transfer", "debit and credit accounts must differ")
        if r.currency not in self.expiry_days:
            raise _Fail("currency-not-found", f"no currency {r.currency!r}")
        if debit.currency != r.currency or credit.currency != r.currency:
            raise _Fail(
                "currency-mismatch",
                f"{debit.code} holds {debit.currency}, {credit.code} holds {credit.currency}, "
                f"the transfer is in {r.currency}",
            )
        for account in (debit, credit):
            if account.closed:
                raise _Fail("account-closed", f"account {account.code!r} is closed")
        amount = r.amount
        ts = self.ts
        if not debit.allow_negative and debit.dp + debit.dpend + amount > debit.cp:
            raise _Fail(
                "insufficient-funds",
                f"{debit.code} has {debit.cp - debit.dp - debit.dpend} available, {amount} asked",
            )
        if debit.max_debits is not None and debit.dp + debit.dpend + amount > debit.max_debits:
            raise _Fail(
                "debit-cap-exceeded", f"{debit.code} may send at most {debit.max_debits} in all"
            )
        if (
            credit.max_credits is not None
            and credit.cp + credit.cpend + amount > credit.max_credits
        ):
            raise _Fail(
                "credit-cap-exceeded",
                f"{credit.code} may receive at most {credit.max_credits} in all",
            )
        thanks = debit.kind == "resident" and credit.kind == "resident"
        day = 0
        if thanks and debit.daily_send_limit is not None:
            day = jst_day(ts)
            sent = debit.day_sent if debit.day_key == day else 0
            if sent + amount > debit.daily_send_limit:
                raise _Fail(
                    "daily-limit-exceeded",
                    f"{debit.code} may send {debit.daily_send_limit} a day; {sent} sent today",
                )
        taken: list[tuple[_Lot, int]] = []
        if debit.lots is not None:
            taken = self._take_lots(debit, amount, item.sweep)
        seq = self.next_seq
        self.next_seq += 1
        for lot, n in taken:
            self.spends.append((seq, lot, n))
        if r.pending:
            self._set(debit, "dpend", debit.dpend + amount)
            self._set(credit, "cpend", credit.cpend + amount)
        else:
            self._set(debit, "dp", debit.dp + amount)
            self._set(credit, "cp", credit.cp + amount)
            if credit.lots is not None:
                self._give_lots(credit, seq, taken, amount, r, self.expiry_days[r.currency])
        debit.dirty = credit.dirty = True
        if day:
            self._set(debit, "day_sent", (debit.day_sent if debit.day_key == day else 0) + amount)
            self._set(debit, "day_key", day)
        row = self._row(
            seq, r, debit, credit, amount, "pending" if r.pending else "posted", item.hash
        )
        if r.pending:
            self.pendings[r.id] = _Pending(
                seq,
                r.id,
                debit.id,
                credit.id,
                amount,
                r.currency,
                "pending",
                r.timeout_seconds,
                ts,
                [(lot.id, n) for lot, n in taken],
            )
        return self._created(row, debit, credit, item.hash)

    def _resolve(self, item: Item) -> TransferResult:
        r = item.req
        if r.post_pending_id and r.void_pending_id:
            raise _Fail("invalid-transfer", "give post_pending_id or void_pending_id, not both")
        if r.pending:
            raise _Fail("invalid-transfer", "a post or void is not itself pending")
        posting = r.post_pending_id is not None
        pid = r.post_pending_id or r.void_pending_id
        pending = self.pendings.get(pid)  # type: ignore[arg-type]
        if pending is None:
            raise _Fail("pending-not-found", f"no pending transfer {pid}")
        if pid in self.resolved:
            raise _Fail("pending-already-resolved", f"transfer {pid} was already posted or voided")
        debit, credit = self.by_id[pending.debit_id], self.by_id[pending.credit_id]
        if (
            (r.debit_account and r.debit_account != debit.code)
            or (r.credit_account and r.credit_account != credit.code)
            or (r.currency and r.currency != pending.currency)
        ):
            raise _Fail("invalid-transfer", "accounts and currency must match the pending transfer")
        ts = self.ts
        if posting:
            if pending.timeout_s and pending.ts_us + pending.timeout_s * 1_000_000 <= ts:
                raise _Fail("pending-expired", f"pending transfer {pid} timed out")
            amount = pending.amount if r.amount is None else r.amount
            if amount <= 0:
                raise _Fail("invalid-transfer", "amount must be a positive integer")
            if amount > pending.amount:
                raise _Fail("amount-exceeds-pending", f"at most {pending.amount} can be posted")
            for account in (debit, credit):
                if account.closed:
                    raise _Fail("account-closed", f"account {account.code!r} is closed")
        else:
            if r.amount is not None and r.amount != pending.amount:
                raise _Fail("invalid-transfer", "a void releases the whole pending amount")
            amount = pending.amount
        seq = self.next_seq
        self.next_seq += 1
        self._set(debit, "dpend", debit.dpend - pending.amount)
        self._set(credit, "cpend", credit.cpend - pending.amount)
        kept: list[tuple[_Lot, int]] = []
        give_back = pending.amount - amount if posting else pending.amount
        if pending.spends:
            # Give back from the latest-expiring lots drawn; keep the earliest.
            drawn = sorted(
                ((self.lot_by_id[lot_id], n) for lot_id, n in pending.spends if n > 0),
                key=lambda x: x[0].order(),
                reverse=True,
            )
            for lot, n in drawn:
                back = min(n, give_back)
                if back:
                    self._set(lot, "remaining", lot.remaining + back)
                    lot.dirty = True
                    self.spends.append((seq, lot, -back))
                    give_back -= back
                if n - back:
                    kept.append((lot, n - back))
            kept.reverse()
        if posting:
            self._set(debit, "dp", debit.dp + amount)
            self._set(credit, "cp", credit.cp + amount)
            if credit.lots is not None:
                self._give_lots(credit, seq, kept, amount, r, self.expiry_days[pending.currency])
        debit.dirty = credit.dirty = True
        # In the undo log rather than a copy of the set per chain (quadratic in a batch
        # of many posts and voids).
        self.resolved.add(pid)  # type: ignore[arg-type]
        self.undo.append((self.resolved, "@discard", pid))
        row = {
            "tenant_id": self.tenant,
            "seq": seq,
            "id": r.id,
            "currency": pending.currency,
            "debit_id": debit.id,
            "credit_id": credit.id,
            "amount": amount,
            "kind": "post" if posting else "void",
            "pending_id": pid,
            "timeout_s": None,
            "linked": r.linked,
            "code": r.code,
            "ref": r.ref,
            "memo": r.memo,
            "expires_us": None if r.expires_at is None else to_us(r.expires_at),
            "ts_us": ts,
            "body_hash": item.hash,
        }
        return self._created(row, debit, credit, item.hash)

    def _row(
        self,
        seq: int,
        r: TransferCreate,
        debit: _Account,
        credit: _Account,
        amount: int,
        kind: str,
        h: str,
    ) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant,
            "seq": seq,
            "id": r.id,
            "currency": r.currency,
            "debit_id": debit.id,
            "credit_id": credit.id,
            "amount": amount,
            "kind": kind,
            "pending_id": None,
            "timeout_s": r.timeout_seconds,
            "linked": r.linked,
            "code": r.code,
            "ref": r.ref,
            "memo": r.memo,
            "expires_us": None if r.expires_at is None else to_us(r.expires_at),
            "ts_us": self.ts,
            "body_hash": h,
        }

    def _created(
        self, row: dict[str, Any], debit: _Account, credit: _Account, h: str
    ) -> TransferResult:
        self.rows.append(row)
        public = transfer_public(row, debit.code, credit.code)
        self.created[row["id"]] = (h, public)
        return result(id=row["id"], status="created", transfer=public, error=None)

    def _take_lots(self, account: _Account, amount: int, sweep: bool) -> list[tuple[_Lot, int]]:
        """Draw ``amount`` from the wallet's usable lots in spend order, in one pass (the
        first lot usually covers it); a shortfall raises, and the caller's rollback
        restores the lots drawn so far."""
        ts = self.ts
        taken = []
        left = amount
        for lot in account.lots or ():
            if lot.remaining <= 0:
                continue
            expired = lot.expires is not None and lot.expires <= ts
            if expired != sweep:
                continue
            n = min(lot.remaining, left)
            self._set(lot, "remaining", lot.remaining - n)
            lot.dirty = True
            taken.append((lot, n))
            left -= n
            if not left:
                return taken
        raise _Fail(
            "insufficient-funds",
            f"{account.code} has {amount - left} unexpired points available, {amount} asked",
        )

    def _give_lots(
        self,
        account: _Account,
        seq: int,
        taken: list[tuple[_Lot, int]],
        amount: int,
        r: TransferCreate,
        expiry_days: int | None,
    ) -> None:
        """Credit a wallet: new lots keep the expiry of the points they came from."""
        if taken:
            by_expiry: dict[int | None, int] = defaultdict(int)
            for lot, n in taken:
                by_expiry[lot.expires] += n
            parts = list(by_expiry.items())
        else:
            if r.expires_at is not None:
                expires = to_us(r.expires_at)
            elif expiry_days:
                expires = _end_of_jst_day(self.ts, expiry_days)
            else:
                expires = None
            parts = [(expires, amount)]
        for expires, n in parts:
            lot = _Lot(self.next_temp_lot, account.id, seq, expires, n, n)
            self.next_temp_lot -= 1
            lot.new = True
            self.new_lots.append(lot)
            self.lot_by_id[lot.id] = lot
            lots_list = account.lots
            assert lots_list is not None
            lots_list.append(lot)
            self.undo.append((lots_list, "@remove", lot))
            lots_list.sort(key=_Lot.order)

    # --- writing --------------------------------------------------------------------------

    def write(self) -> None:
        conn, tenant = self.conn, self.tenant
        if not self.rows:
            return
        codes = {a.id: a.code for a in self.by_id.values()}
        frontier = self.frontier
        for row in self.rows:
            leaf = merkle.leaf_hash(
                leaf_bytes(tenant, row, codes[row["debit_id"]], codes[row["credit_id"]])
            )
            row["leaf_hash"] = leaf
            frontier.append(leaf)
        bulk_insert(conn, transfers, self.rows)
        dirty = sorted((a for a in self.by_id.values() if a.dirty), key=lambda a: a.id)
        update_by_id(
            conn,
            "ledger_accounts",
            [
                "debits_posted",
                "credits_posted",
                "debits_pending",
                "credits_pending",
                "day_key",
                "day_sent",
            ],
            [(a.dp, a.cp, a.dpend, a.cpend, a.day_key, a.day_sent, a.id) for a in dirty],
        )
        if self.new_lots:
            ids = allocate_keys(conn, lots, len(self.new_lots))
            for lot, real in zip(self.new_lots, ids, strict=True):
                lot.id = real
            bulk_insert(
                conn,
                lots,
                [
                    {
                        "id": lot.id,
                        "tenant_id": tenant,
                        "account_id": lot.account_id,
                        "source_seq": lot.source_seq,
                        "expires_us": lot.expires,
                        "amount": lot.amount,
                        "remaining": lot.remaining,
                    }
                    for lot in self.new_lots
                ],
            )
        changed = sorted(
            (lot for lot in self.lot_by_id.values() if lot.dirty and not lot.new),
            key=lambda lot: lot.id,
        )
        update_by_id(
            conn, "ledger_lots", ["remaining"], [(lot.remaining, lot.id) for lot in changed]
        )
        if self.spends:
            merged: dict[tuple[int, int], int] = defaultdict(int)
            for seq, lot, n in self.spends:
                merged[(seq, lot.id)] += n
            bulk_insert(
                conn,
                lot_spends,
                [
                    {"tenant_id": tenant, "seq": seq, "lot_id": lot_id, "amount": n}
                    for (seq, lot_id), n in merged.items()
                ],
            )
        execute(
            conn, _HEAD_UPDATE_SQL, (frontier.size, frontier.to_bytes(), frontier.root(), tenant)
        )


def _end_of_jst_day(ts: int, days: int) -> int:
    """Points credited now expire at the end (24:00 JST) of the day ``days`` days later."""
    d = datetime.fromtimestamp(ts / 1_000_000, JST).date() + timedelta(days=days + 1)
    return to_us(datetime(d.year, d.month, d.day, tzinfo=JST))


def update_by_id(
    conn: Connection, table: str, columns: list[str], params: list[tuple[int, ...]]
) -> None:
    """Set integer ``columns`` of many rows (each tuple: the values, then the id).

    PostgreSQL: one ``UPDATE … FROM unnest(arrays)`` statement, one round trip for the
    whole batch; SQLite: ``executemany`` in process."""
    if not params:
        return
    if is_postgres(conn):
        names = [*columns, "id"]
        # Integer arrays as '{1,2,…}' literals the server parses: psycopg's per-element
        # array dumping in Python cost more than the UPDATE itself.
        arrays = ["{" + ",".join(map(str, col)) + "}" for col in zip(*params, strict=True)]
        sets = ", ".join(f"{c} = v.{c}" for c in columns)
        sql = (
            f"UPDATE {table} AS t SET {sets} FROM unnest("
            + ", ".join(["%s::bigint[]"] * len(names))
            + f") AS v({', '.join(names)}) WHERE t.id = v.id"
        )
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            cur.execute(sql, arrays)
        return
    sets = ", ".join(f"{c} = ?" for c in columns)
    executemany(conn, f"UPDATE {table} SET {sets} WHERE id = ?", params)


_gc_lock = threading.Lock()
_gc_batches = 0  # batches running now
_gc_paused_here = False  # whether the collector was on when the first of them started


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while batches run.

    A batch allocates tens of thousands of objects that live until it ends, so the
    collector keeps running full collections that walk the whole heap — a third of a
    batch's CPU time in a profile. Everything a batch makes is freed by reference counting
    when it ends; cyclic garbage made meanwhile is collected once the collector resumes,
    when the last concurrent batch ends (a counter, so overlapping threads are safe).
    """
    global _gc_batches, _gc_paused_here
    with _gc_lock:
        if _gc_batches == 0:
            _gc_paused_here = gc.isenabled()
            gc.disable()
        _gc_batches += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_batches -= 1
            if _gc_batches == 0 and _gc_paused_here:
                gc.enable()


def apply_batch(
    conn: Connection, tenant: str, items: list[Item], ts: int | None = None
) -> list[TransferResult]:
    """Apply ``items`` in order inside ``conn``'s transaction; the caller commits."""
    with gc_paused():
        batch = Batch(conn, tenant, items, ts if ts is not None else now_us())
        batch.load(lock_head(conn, tenant))
        results = batch.run()
        batch.write()
    return results


def result_problem(result: TransferResult) -> Problem:
    """The Problem of a failed result (for callers that raise on a single transfer)."""
    error = result.error
    assert error is not None
    code = error.type.removeprefix(PREFIX)
    return ledger_problem(code, error.detail)

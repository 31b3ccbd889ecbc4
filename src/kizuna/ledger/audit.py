"""Tamper evidence: signed checkpoints, receipts with inclusion proofs, consistency proofs,
and ``verify``, which recomputes the log, every balance and every lot from the transfers.

A checkpoint is the signed text (the C2SP ``tlog-checkpoint`` body)::

    <origin>\\n<size>\\n<base64 root>\\n

signed with the tenant's Ed25519 key; ``origin`` is ``kizuna/ledger/<tenant>``.
"""

from __future__ import annotations

import base64
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from kizuna.ledger import merkle
from kizuna.ledger.apply import from_us, leaf_bytes, now_us
from kizuna.ledger.keys import KeyStore, key_id, public_bytes, verify_signature
from kizuna.ledger.models import (
    accounts,
    checkpoints,
    logs,
    lot_spends,
    lots,
    signing_keys,
    transfers,
)
from kizuna.ledger.schemas import CheckpointPublic, VerifyReport
from kizuna.storage import is_postgres, writer

ORIGIN_PREFIX = "kizuna/ledger/"


def origin(tenant: str) -> str:
    return ORIGIN_PREFIX + tenant


def note_text(tenant: str, size: int, root: bytes) -> str:
    return f"{origin(tenant)}\n{size}\n{base64.b64encode(root).decode()}\n"


def checkpoint_public(tenant: str, row: Any) -> CheckpointPublic:
    return CheckpointPublic(
        origin=origin(tenant),
        size=row.size,
        root=base64.b64encode(row.root).decode(),
        timestamp=from_us(row.ts_us),
        key_id=row.key_id,
        note=row.note,
        signature=base64.b64encode(row.signature).decode(),
    )


def sign_checkpoint(engine: Engine, keys: KeyStore, tenant: str) -> CheckpointPublic | None:
    """Sign the log's current head, unless it is empty or already signed at this size."""
    key = keys.private_key(tenant)
    public = public_bytes(key)
    kid = key_id(public)
    with writer(engine).begin() as conn:
        head = conn.execute(select(logs).where(logs.c.tenant_id == tenant)).first()
        if head is None or head.size == 0:
            return None
        found = conn.execute(
            select(checkpoints).where(
                checkpoints.c.tenant_id == tenant, checkpoints.c.size == head.size
            )
        ).first()
        if found is not None:
            return checkpoint_public(tenant, found)
        if not conn.execute(
            select(signing_keys.c.key_id).where(
                signing_keys.c.tenant_id == tenant, signing_keys.c.key_id == kid
            )
        ).first():
            _insert_ignore(
                conn,
                signing_keys,
                tenant_id=tenant,
                key_id=kid,
                public_key=public,
                created_us=now_us(),
            )
        note = note_text(tenant, head.size, head.root)
        values = {
            "tenant_id": tenant,
            "size": head.size,
            "root": head.root,
            "ts_us": now_us(),
            "key_id": kid,
            "note": note,
            "signature": key.sign(note.encode()),
        }
        _insert_ignore(conn, checkpoints, **values)
        row = conn.execute(
            select(checkpoints).where(
                checkpoints.c.tenant_id == tenant, checkpoints.c.size == head.size
            )
        ).one()
        return checkpoint_public(tenant, row)


def _insert_ignore(conn: Connection, table: Any, **values: Any) -> None:
    if is_postgres(conn):
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    conn.execute(dialect_insert(table).values(**values).on_conflict_do_nothing())


def leaf_hashes(conn: Connection, tenant: str, size: int) -> list[bytes]:
    return list(
        conn.execute(
            select(transfers.c.leaf_hash)
            .where(transfers.c.tenant_id == tenant, transfers.c.seq < size)
            .order_by(transfers.c.seq)
        ).scalars()
    )


def _stream(conn: Connection, query: Any) -> Iterable[Any]:
    return conn.execution_options(stream_results=True, yield_per=20_000).execute(query)


def tenants_with_ledgers(conn: Connection) -> list[str]:
    return sorted(conn.execute(select(logs.c.tenant_id)).scalars())


def verify(
    engine: Engine,
    keys: KeyStore | None,
    tenant: str | None = None,
    trusted_keys: dict[str, bytes] | None = None,
) -> VerifyReport:
    """Recompute everything from the transfer rows and compare with what is stored.

    Checks, per tenant: log indexes are 0..n-1 without gaps; each stored leaf hash equals
    the hash of its row (and the account codes it names); the recomputed root equals the
    log head and the root of every checkpoint at its size; every checkpoint's signature is
    valid under the tenant's key (the key file, or ``trusted_keys`` an auditor holds, not
    only the table); two-phase transfers resolve once, within their amount; every account's
    four totals equal the sums of its transfers; per currency all balances sum to zero; no
    account that may not go negative is negative; every lot is spent exactly by its spend
    rows and never below zero; each wallet's lots add up to its available balance.
    """
    started = time.perf_counter()
    report = VerifyReport(ok=True)
    eng = (
        engine.execution_options(isolation_level="REPEATABLE READ")
        if engine.dialect.name == "postgresql"
        else engine
    )
    with eng.connect() as conn, conn.begin():
        names = [tenant] if tenant else tenants_with_ledgers(conn)
        for name in names:
            _verify_tenant(conn, name, keys, trusted_keys or {}, report)
            report.tenants += 1
    report.ok = not report.errors
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _verify_tenant(
    conn: Connection,
    tenant: str,
    keys: KeyStore | None,
    trusted: dict[str, bytes],
    report: VerifyReport,
) -> None:
    errors = report.errors
    say = errors.append
    acc = {
        row.id: row for row in conn.execute(select(accounts).where(accounts.c.tenant_id == tenant))
    }
    report.accounts += len(acc)
    code_of = {i: row.code for i, row in acc.items()}
    kind_of = {i: row.kind for i, row in acc.items()}
    cps = conn.execute(
        select(checkpoints).where(checkpoints.c.tenant_id == tenant).order_by(checkpoints.c.size)
    ).all()
    report.checkpoints += len(cps)
    cp_at = {row.size: row for row in cps}
    # Signatures: the key file (if this server holds it), auditor-pinned keys, the table.
    known = {
        row.key_id: row.public_key
        for row in conn.execute(select(signing_keys).where(signing_keys.c.tenant_id == tenant))
    }
    pinned: dict[str, bytes] = dict(trusted)
    if keys is not None:
        own = keys.existing(tenant)
        if own is not None:
            pub = public_bytes(own)
            pinned[key_id(pub)] = pub
    for row in cps:
        pub = pinned.get(row.key_id) if pinned else known.get(row.key_id)
        if pub is None:
            say(f"{tenant}: checkpoint {row.size} is signed by unknown key {row.key_id}")
        elif known.get(row.key_id) not in (None, pub):
            say(f"{tenant}: public key {row.key_id} in the table differs from the pinned key")
        elif row.note != note_text(tenant, row.size, row.root):
            say(f"{tenant}: checkpoint {row.size} note does not match its size and root")
        elif not verify_signature(pub, row.signature, row.note.encode()):
            say(f"{tenant}: checkpoint {row.size} has an invalid signature")

    dp: dict[int, int] = defaultdict(int)
    cp: dict[int, int] = defaultdict(int)
    dpend: dict[int, int] = defaultdict(int)
    cpend: dict[int, int] = defaultdict(int)
    open_pending: dict[str, tuple[int, int, int, str]] = {}
    resolved: set[str] = set()
    frontier = merkle.Frontier()
    spends_it = iter(
        _stream(
            conn,
            select(lot_spends.c.seq, func.sum(lot_spends.c.amount))
            .where(lot_spends.c.tenant_id == tenant)
            .group_by(lot_spends.c.seq)
            .order_by(lot_spends.c.seq),
        )
    )
    next_spend = next(spends_it, None)
    lots_it = iter(
        _stream(
            conn,
            select(lots.c.source_seq, func.sum(lots.c.amount))
            .where(lots.c.tenant_id == tenant)
            .group_by(lots.c.source_seq)
            .order_by(lots.c.source_seq),
        )
    )
    next_lot = next(lots_it, None)
    leaf_hash = merkle.leaf_hash
    expected = 0
    rows = _stream(
        conn, select(transfers).where(transfers.c.tenant_id == tenant).order_by(transfers.c.seq)
    )
    for row in rows:
        m = row._mapping
        seq = m["seq"]
        if seq != expected:
            say(f"{tenant}: log index {expected} missing (next row is {seq})")
            expected = seq
        expected += 1
        debit, credit, amount, kind = m["debit_id"], m["credit_id"], m["amount"], m["kind"]
        if debit not in code_of or credit not in code_of:
            say(f"{tenant}: transfer {seq} names an unknown account")
            continue
        leaf = leaf_hash(leaf_bytes(tenant, m, code_of[debit], code_of[credit]))
        if leaf != m["leaf_hash"]:
            say(f"{tenant}: transfer {seq} ({m['id']}) does not match its leaf hash")
        frontier.append(leaf)
        if frontier.size in cp_at and frontier.root() != cp_at[frontier.size].root:
            say(
                f"{tenant}: the log's root at size {frontier.size} differs from its signed checkpoint"
            )
        if amount <= 0:
            say(f"{tenant}: transfer {seq} has a non-positive amount")
        if acc[debit].currency != m["currency"] or acc[credit].currency != m["currency"]:
            say(
                f"{tenant}: transfer {seq} moves {m['currency']} between accounts of another currency"
            )
        spend_expected = 0
        lots_expected = 0
        if kind == "posted":
            dp[debit] += amount
            cp[credit] += amount
            spend_expected = amount
            lots_expected = amount
        elif kind == "pending":
            dpend[debit] += amount
            cpend[credit] += amount
            open_pending[m["id"]] = (debit, credit, amount, m["currency"])
            spend_expected = amount
        else:
            pid = m["pending_id"]
            pending = open_pending.pop(pid, None)
            if pending is None:
                say(
                    f"{tenant}: transfer {seq} resolves {pid}, which is not an open pending transfer"
                )
                continue
            resolved.add(pid)
            p_debit, p_credit, p_amount, _ = pending
            if (p_debit, p_credit) != (debit, credit):
                say(f"{tenant}: transfer {seq} resolves {pid} between other accounts")
            dpend[p_debit] -= p_amount
            cpend[p_credit] -= p_amount
            if kind == "post":
                if amount > p_amount:
                    say(f"{tenant}: transfer {seq} posts more than pending {pid} held")
                dp[debit] += amount
                cp[credit] += amount
                spend_expected = amount - p_amount
                lots_expected = amount
            elif kind == "void":
                spend_expected = -p_amount
            else:
                say(f"{tenant}: transfer {seq} has unknown kind {kind!r}")
        got_spend = 0
        while next_spend is not None and next_spend[0] < seq:
            say(f"{tenant}: lot spends recorded for missing transfer {next_spend[0]}")
            next_spend = next(spends_it, None)
        if next_spend is not None and next_spend[0] == seq:
            got_spend = int(next_spend[1])
            next_spend = next(spends_it, None)
        if kind_of[debit] == "resident" and got_spend != spend_expected:
            say(f"{tenant}: transfer {seq} drew {got_spend} from lots, expected {spend_expected}")
        elif kind_of[debit] != "resident" and got_spend:
            say(f"{tenant}: transfer {seq} drew on lots of a non-wallet account")
        got_lots = 0
        while next_lot is not None and next_lot[0] < seq:
            say(f"{tenant}: lots created by missing transfer {next_lot[0]}")
            next_lot = next(lots_it, None)
        if next_lot is not None and next_lot[0] == seq:
            got_lots = int(next_lot[1])
            next_lot = next(lots_it, None)
        want_lots = lots_expected if kind_of[credit] == "resident" else 0
        if got_lots != want_lots:
            say(f"{tenant}: transfer {seq} created lots of {got_lots}, expected {want_lots}")
    report.transfers += frontier.size
    if next_spend is not None or next_lot is not None:
        say(f"{tenant}: lots or lot spends point past the end of the log")
    for size in cp_at:
        if size > frontier.size:
            say(
                f"{tenant}: checkpoint {size} is beyond the log ({frontier.size}): rows were removed"
            )
    head = conn.execute(select(logs).where(logs.c.tenant_id == tenant)).first()
    if head is None or head.size != frontier.size or head.root != frontier.root():
        say(f"{tenant}: the log head differs from the log recomputed from the transfers")
    by_currency: dict[str, int] = defaultdict(int)
    for i, row in acc.items():
        stored = (row.debits_posted, row.credits_posted, row.debits_pending, row.credits_pending)
        computed = (dp[i], cp[i], dpend[i], cpend[i])
        if stored != computed:
            say(f"{tenant}: account {row.code} stores {stored}, its transfers give {computed}")
        balance = row.credits_posted - row.debits_posted
        by_currency[row.currency] += balance
        if not row.allow_negative and balance - row.debits_pending < 0:
            say(f"{tenant}: account {row.code} is overdrawn")
    for currency, total in by_currency.items():
        if total != 0:
            say(f"{tenant}: balances of {currency} sum to {total}, not 0")
    # Lots: spent exactly by their spend rows; wallets' lots sum to what is available.
    spent = dict(
        conn.execute(
            select(lot_spends.c.lot_id, func.sum(lot_spends.c.amount))
            .where(lot_spends.c.tenant_id == tenant)
            .group_by(lot_spends.c.lot_id)
        ).all()
    )
    remaining: dict[int, int] = defaultdict(int)
    for lot in _stream(conn, select(lots).where(lots.c.tenant_id == tenant)):
        if not 0 <= lot.remaining <= lot.amount:
            say(f"{tenant}: lot {lot.id} has {lot.remaining} left of {lot.amount}")
        if lot.amount - lot.remaining != int(spent.get(lot.id, 0)):
            say(
                f"{tenant}: lot {lot.id} is spent {lot.amount - lot.remaining}, its spends say {spent.get(lot.id, 0)}"
            )
        remaining[lot.account_id] += lot.remaining
    for i, row in acc.items():
        if row.kind == "resident":
            available = row.credits_posted - row.debits_posted - row.debits_pending
            if remaining[i] != available:
                say(f"{tenant}: wallet {row.code} holds {available}, its lots {remaining[i]}")

"""Tamper evidence: verify catches every kind of row change; receipts and proofs check out."""

from __future__ import annotations

import base64

import pytest
from sqlalchemy import select, text

from kizuna.ledger import merkle
from kizuna.ledger.apply import leaf_bytes
from kizuna.ledger.keys import verify_signature
from kizuna.ledger.models import accounts, transfers

from .conftest import tx


@pytest.fixture
def filled(ledger, tenant):
    out = ledger.post_transfers(
        tenant,
        [tx("budget", "r1", 500), tx("budget", "r2", 300), tx("r1", "m1", 120)]
        + [tx("r2", "r1", 5) for _ in range(10)],
    )
    assert all(r.status == "created" for r in out)
    ledger.checkpoint(tenant)
    ledger.post_transfers(tenant, [tx("r1", "m1", 7), tx("budget", "r2", 9)])
    ledger.checkpoint(tenant)
    assert ledger.verify(tenant).ok
    return tenant


def typed_rows(conn, tenant: str, seq: int | None = None) -> list:
    """Transfer rows with their account codes, typed as the ledger reads them."""
    d, c = accounts.alias("d"), accounts.alias("c")
    query = (
        select(transfers, d.c.code.label("dc"), c.c.code.label("cc"))
        .join(d, d.c.id == transfers.c.debit_id)
        .join(c, c.c.id == transfers.c.credit_id)
        .where(transfers.c.tenant_id == tenant)
        .order_by(transfers.c.seq)
    )
    if seq is not None:
        query = query.where(transfers.c.seq == seq)
    return conn.execute(query).all()


def sql(engine, statement: str, **params) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def errors(ledger, tenant) -> list[str]:
    report = ledger.verify(tenant)
    assert not report.ok
    return report.errors


def test_changed_amount_is_caught(ledger, filled, engine):
    sql(
        engine,
        "UPDATE ledger_transfers SET amount = amount + 1 WHERE tenant_id = :t AND seq = 3",
        t=filled,
    )
    assert any("does not match its leaf hash" in e for e in errors(ledger, filled))


def test_changed_amount_with_recomputed_leaf_is_caught_by_checkpoint_and_balances(
    ledger, filled, engine
):
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE ledger_transfers SET amount = 121 WHERE tenant_id = :t AND seq = 3"),
            {"t": filled},
        )
        row = typed_rows(conn, filled, 3)[0]
        leaf = merkle.leaf_hash(leaf_bytes(filled, row._mapping, row.dc, row.cc))
        conn.execute(
            text("UPDATE ledger_transfers SET leaf_hash = :h WHERE tenant_id = :t AND seq = 3"),
            {"h": leaf, "t": filled},
        )
    found = errors(ledger, filled)
    assert any("differs from its signed checkpoint" in e for e in found)
    assert any("stores" in e for e in found)  # the balances no longer add up


def test_deleted_transfer_is_caught(ledger, filled, engine):
    sql(engine, "DELETE FROM ledger_lot_spends WHERE tenant_id = :t", t=filled)
    sql(engine, "DELETE FROM ledger_transfers WHERE tenant_id = :t AND seq = 14", t=filled)
    found = errors(ledger, filled)
    assert any("beyond the log" in e or "log head differs" in e for e in found)


def test_swapped_order_is_caught(ledger, filled, engine):
    sql(engine, "UPDATE ledger_transfers SET seq = -1 WHERE tenant_id = :t AND seq = 4", t=filled)
    sql(engine, "UPDATE ledger_transfers SET seq = 4 WHERE tenant_id = :t AND seq = 5", t=filled)
    sql(engine, "UPDATE ledger_transfers SET seq = 5 WHERE tenant_id = :t AND seq = -1", t=filled)
    assert any("leaf hash" in e for e in errors(ledger, filled))


def test_changed_balance_is_caught(ledger, filled, engine):
    sql(
        engine,
        "UPDATE ledger_accounts SET credits_posted = credits_posted + 1000 WHERE tenant_id = :t AND code = 'm1'",
        t=filled,
    )
    found = errors(ledger, filled)
    assert any("account m1 stores" in e for e in found)
    assert any("sum to" in e for e in found)


def test_renamed_account_is_caught(ledger, filled, engine):
    sql(
        engine,
        "UPDATE ledger_accounts SET code = 'm2' WHERE tenant_id = :t AND code = 'm1'",
        t=filled,
    )
    assert any("leaf hash" in e for e in errors(ledger, filled))


def test_changed_lot_is_caught(ledger, filled, engine):
    sql(engine, "UPDATE ledger_lots SET remaining = remaining + 50 WHERE tenant_id = :t", t=filled)
    found = errors(ledger, filled)
    assert any("lot" in e for e in found)


def test_changed_checkpoint_is_caught(ledger, filled, engine):
    sql(
        engine,
        "UPDATE ledger_checkpoints SET root = :r WHERE tenant_id = :t",
        r=b"\x00" * 32,
        t=filled,
    )
    assert any("checkpoint" in e for e in errors(ledger, filled))


def test_resigned_with_a_substituted_key_is_caught(ledger, filled, engine, tmp_path):
    from kizuna.ledger.keys import KeyStore, key_id, public_bytes

    forger = KeyStore(tmp_path / "forger").private_key(filled)
    pub = public_bytes(forger)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ledger_signing_keys (tenant_id, key_id, public_key, created_us) VALUES (:t, :k, :p, 0)"
            ),
            {"t": filled, "k": key_id(pub), "p": pub},
        )
        for row in conn.execute(
            text("SELECT size, note FROM ledger_checkpoints WHERE tenant_id = :t"), {"t": filled}
        ).all():
            conn.execute(
                text(
                    "UPDATE ledger_checkpoints SET key_id = :k, signature = :s WHERE tenant_id = :t AND size = :n"
                ),
                {"k": key_id(pub), "s": forger.sign(row.note.encode()), "t": filled, "n": row.size},
            )
    assert any("unknown key" in e for e in errors(ledger, filled))


def test_receipt_and_consistency_proofs_check_out_for_an_outside_auditor(ledger, filled):
    cps = ledger.checkpoints(filled)
    new, old = cps[0], cps[1]
    pub = ledger.public_key(filled)
    for cp in (new, old):
        assert verify_signature(pub, base64.b64decode(cp.signature), cp.note.encode())
    first = ledger.list_transfers(filled, limit=3)[2]
    receipt = ledger.receipt(filled, first.id)
    leaf = merkle.leaf_hash(receipt.leaf.encode())
    assert leaf.hex() == receipt.leaf_hash
    root = base64.b64decode(receipt.checkpoint.root)
    proof = [bytes.fromhex(p) for p in receipt.inclusion_proof]
    assert merkle.verify_inclusion(leaf, receipt.index, receipt.checkpoint.size, proof, root)
    c = ledger.consistency_proof(filled, old.size, new.size)
    assert merkle.verify_consistency(
        old.size,
        new.size,
        base64.b64decode(old.root),
        base64.b64decode(new.root),
        [bytes.fromhex(p) for p in c.proof],
    )


def test_a_rewrite_even_re_signed_with_the_real_key_fails_consistency(ledger, filled, engine):
    """An insider who rewrites an old transfer, recomputes every hash and signs a new
    checkpoint with the real key still cannot show consistency with an old checkpoint."""
    old = ledger.checkpoints(filled)[0]
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE ledger_transfers SET memo = 'rewritten' WHERE tenant_id = :t AND seq = 1"),
            {"t": filled},
        )
        rows = typed_rows(conn, filled)
        f = merkle.Frontier()
        for row in rows:
            h = merkle.leaf_hash(leaf_bytes(filled, row._mapping, row.dc, row.cc))
            conn.execute(
                text(
                    "UPDATE ledger_transfers SET leaf_hash = :h WHERE tenant_id = :t AND seq = :s"
                ),
                {"h": h, "t": filled, "s": row.seq},
            )
            f.append(h)
        conn.execute(text("DELETE FROM ledger_checkpoints WHERE tenant_id = :t"), {"t": filled})
        conn.execute(
            text("UPDATE ledger_logs SET frontier = :f, root = :r WHERE tenant_id = :t"),
            {"f": f.to_bytes(), "r": f.root(), "t": filled},
        )
    ledger.post_transfers(filled, [tx("budget", "r1", 1)])
    new = ledger.checkpoint(filled)
    assert ledger.verify(filled).ok  # internally consistent again ...
    c = ledger.consistency_proof(filled, old.size, new.size)
    assert not merkle.verify_consistency(  # ... but not with what the auditor holds
        old.size,
        new.size,
        base64.b64decode(old.root),
        base64.b64decode(new.root),
        [bytes.fromhex(p) for p in c.proof],
    )

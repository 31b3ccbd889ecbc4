"""The Merkle functions against RFC 9162's recursive definitions, and proof checking."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from kizuna.ledger import merkle


def mth(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return merkle.node_hash(mth(leaves[:k]), mth(leaves[k:]))


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return path(m, leaves[:k]) + [mth(leaves[k:])]
    return path(m - k, leaves[k:]) + [mth(leaves[:k])]


def subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if b else [mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return subproof(m, leaves[:k], b) + [mth(leaves[k:])]
    return subproof(m - k, leaves[k:], False) + [mth(leaves[:k])]


def leaves_of(n: int) -> list[bytes]:
    return [merkle.leaf_hash(str(i).encode()) for i in range(n)]


def test_known_root():
    # RFC 6962 hashing of the empty tree and a single leaf.
    assert merkle.root_of([]) == hashlib.sha256(b"").digest()
    assert merkle.leaf_hash(b"") == hashlib.sha256(b"\x00").digest()


def test_frontier_roots_match_mth_at_every_size():
    leaves = leaves_of(70)
    f = merkle.Frontier()
    for i, leaf in enumerate(leaves):
        f.append(leaf)
        assert f.root() == mth(leaves[: i + 1])
        again = merkle.Frontier.from_bytes(f.size, f.to_bytes())
        assert again.root() == f.root()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 80), st.data())
def test_inclusion_proofs(n, data):
    leaves = leaves_of(n)
    m = data.draw(st.integers(0, n - 1))
    proof = merkle.inclusion_proof(leaves, m)
    assert proof == path(m, leaves)
    root = mth(leaves)
    assert merkle.verify_inclusion(leaves[m], m, n, proof, root)
    assert not merkle.verify_inclusion(merkle.leaf_hash(b"x"), m, n, proof, root)
    if n > 1:
        assert not merkle.verify_inclusion(leaves[m], (m + 1) % n, n, proof, root)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 80), st.data())
def test_consistency_proofs(n, data):
    leaves = leaves_of(n)
    m = data.draw(st.integers(1, n - 1))
    proof = merkle.consistency_proof(leaves, m, n)
    assert proof == subproof(m, leaves, True)
    old, new = mth(leaves[:m]), mth(leaves)
    assert merkle.verify_consistency(m, n, old, new, proof)
    # A rewritten old entry breaks consistency with the old root.
    forged = list(leaves)
    forged[data.draw(st.integers(0, m - 1))] = merkle.leaf_hash(b"forged")
    forged_proof = merkle.consistency_proof(forged, m, n)
    assert not merkle.verify_consistency(m, n, old, mth(forged), forged_proof)

"""Per-tenant Ed25519 signing keys for checkpoints, kept as files outside the database.

The private key of tenant ``t`` is ``<KIZUNA_DATA_DIR>/ledger-keys/t.ed25519.pem`` (PKCS#8
PEM, mode 0600), created on first use. It is deliberately not in the database: whoever can
rewrite ledger rows must not also be able to re-sign checkpoints. The public half is
recorded in ``ledger_signing_keys`` (and served at ``GET /ledger/keys``) so auditors can
pin it. With several servers, the key directory must be shared (or the key file copied).

cryptography (~9 MB of a process) is imported where a key is first read, made or checked,
so a server whose ledger never signs does not load it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def key_id(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()[:16]


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # see docstring

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except Exception:  # noqa: BLE001 - any failure is "not valid"
        return False
    return True


class KeyStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._keys: dict[str, Ed25519PrivateKey] = {}

    def path(self, tenant: str) -> Path:
        return self.directory / f"{tenant}.ed25519.pem"

    def existing(self, tenant: str) -> Ed25519PrivateKey | None:
        with self._lock:
            if tenant in self._keys:
                return self._keys[tenant]
        path = self.path(tenant)
        if not path.exists():
            return None
        from cryptography.hazmat.primitives import serialization  # see the module's docstring
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        with self._lock:
            self._keys[tenant] = key
        return key

    def private_key(self, tenant: str) -> Ed25519PrivateKey:
        key = self.existing(tenant)
        if key is not None:
            return key
        from cryptography.hazmat.primitives import serialization  # see the module's docstring
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self.directory.mkdir(parents=True, exist_ok=True)
        new = Ed25519PrivateKey.generate()
        pem = new.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # Written to a temporary file, then hard-linked into place: of several processes
        # creating the key at once, exactly one wins and nobody reads a half-written file.
        tmp = self.directory / f".{tenant}.{os.getpid()}.{threading.get_ident()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, self.path(tenant))
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        key = self.existing(tenant)
        assert key is not None
        return key

"""The auth module's front door: who a request comes from, and credentials management.

Principals come from one of: an API key (machines, scoped to one tenant, read or
read/write), a Kizuna bearer token (people, issued for a password), an OIDC JWT
signed by a configured JWKS (e.g. Keycloak), or nobody (anonymous).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from cachetools import TTLCache
from sqlalchemy import Connection, Engine, delete, insert, select, update

from kizuna.auth.models import api_keys, tokens, user_tenants, users
from kizuna.problems import forbidden, invalid_request, unauthorized
from kizuna.settings import Settings

if TYPE_CHECKING:
    from kizuna.auth.oidc import OidcVerifier


class Role(StrEnum):
    PLATFORM_ADMIN = "platform_admin"
    MUNICIPAL_STAFF = "municipal_staff"
    SERVICE_PROVIDER = "service_provider"
    DEVICE = "device"
    MERCHANT = "merchant"
    RESIDENT = "resident"


# Roles that may write context data in the tenants they belong to.
WRITING_ROLES = frozenset(
    {Role.PLATFORM_ADMIN, Role.MUNICIPAL_STAFF, Role.SERVICE_PROVIDER, Role.DEVICE}
)
# When an OIDC token carries several roles, the most capable one counts.
_ROLE_PRECEDENCE = list(Role)


@dataclass(frozen=True)
class Principal:
    kind: Literal["anonymous", "user", "api_key", "oidc", "open_access", "system"]
    subject: str
    role: Role | None
    # None means every tenant (platform admins).
    tenants: frozenset[str] | None
    can_write: bool

    @property
    def is_anonymous(self) -> bool:
        return self.kind == "anonymous"

    @property
    def is_platform_admin(self) -> bool:
        return self.role == Role.PLATFORM_ADMIN

    def acts_in(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants


ANONYMOUS = Principal("anonymous", "", None, frozenset(), False)
OPEN_ACCESS = Principal("open_access", "open-access", Role.PLATFORM_ADMIN, None, True)
# Kizuna acting on its own behalf (demo seeding, jobs), never reachable over HTTP.
SYSTEM = Principal("system", "kizuna", Role.PLATFORM_ADMIN, None, True)

_hasher = PasswordHasher()


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


class Authenticator:
    """Turns request credentials into a Principal, with a short cache.

    Cached entries live ``cache_seconds``: a revoked key or token stops working
    within that time without a database read on every request.
    """

    def __init__(self, engine: Engine, settings: Settings, cache_seconds: float = 30) -> None:
        self._engine = engine
        self._settings = settings
        self._cache: TTLCache[str, Principal] = TTLCache(maxsize=10_000, ttl=cache_seconds)
        self._names: TTLCache[str, str | None] = TTLCache(maxsize=10_000, ttl=cache_seconds)
        self._lock = threading.Lock()
        self._oidc: OidcVerifier | None = None
        if settings.oidc_jwks_url:
            # PyJWT and cryptography (~10 MB a process) only where OIDC is configured.
            from kizuna.auth.oidc import OidcVerifier

            self._oidc = OidcVerifier(settings)

    def authenticate(self, authorization: str | None, api_key: str | None) -> Principal:
        if api_key:
            return self._cached(api_key, self._from_api_key)
        if authorization:
            scheme, _, credential = authorization.partition(" ")
            if scheme.lower() != "bearer" or not credential.strip():
                raise unauthorized("Use 'Authorization: Bearer <token>' or an X-API-Key header")
            credential = credential.strip()
            if credential.startswith("kzk_"):
                return self._cached(credential, self._from_api_key)
            if credential.startswith("kzt_"):
                return self._cached(credential, self._from_token)
            return self._from_jwt(credential)
        return OPEN_ACCESS if self._settings.open_access else ANONYMOUS

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()
            self._names.clear()

    def display_name(self, username: str) -> str | None:
        """The name a page greets a signed-in user by (cached like principals)."""
        with self._lock:
            if username in self._names:
                return self._names[username]
        with self._engine.connect() as conn:
            name = conn.execute(
                select(users.c.display_name).where(users.c.username == username)
            ).scalar_one_or_none()
        with self._lock:
            self._names[username] = name
        return name

    def _cached(self, credential: str, load) -> Principal:  # noqa: ANN001
        key = _sha256(credential)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        principal = load(credential)
        with self._lock:
            self._cache[key] = principal
        return principal

    def _from_api_key(self, key: str) -> Principal:
        try:
            _, key_id, secret = key.split("_", 2)
        except ValueError:
            raise unauthorized("Malformed API key") from None
        with self._engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        if (
            row is None
            or row.revoked_at is not None
            or not secrets.compare_digest(row.secret_sha256, _sha256(secret))
        ):
            raise unauthorized("Unknown or revoked API key")
        return Principal(
            "api_key", f"apikey:{key_id}", None, frozenset({row.tenant_id}), row.can_write
        )

    def _from_token(self, token: str) -> Principal:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(tokens.c.expires_at, users)
                .join(users, users.c.id == tokens.c.user_id)
                .where(tokens.c.token_sha256 == _sha256(token))
            ).first()
            if row is None or not row.active:
                raise unauthorized("Unknown token")
            if _aware(row.expires_at) < _now():
                raise unauthorized("Token expired; sign in again")
            return _user_principal(conn, row)

    def _from_jwt(self, token: str) -> Principal:
        if self._oidc is None:
            raise unauthorized("Unknown bearer token (no OIDC provider is configured)")
        claims = self._oidc.claims(token)
        s = self._settings
        granted = {str(r) for r in _claim(claims, s.oidc_roles_claim) or []}
        role = next((r for r in _ROLE_PRECEDENCE if r.value in granted), None)
        if role is None:
            raise forbidden("The OIDC token grants no Kizuna role")
        tenants = frozenset(str(t) for t in _claim(claims, s.oidc_tenants_claim) or [])
        subject = str(claims.get("preferred_username") or claims.get("sub") or "")
        return Principal(
            "oidc",
            f"oidc:{subject}",
            role,
            None if role == Role.PLATFORM_ADMIN else tenants,
            role in WRITING_ROLES,
        )


def _claim(claims: dict[str, Any], dotted: str) -> Any:
    value: Any = claims
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    if isinstance(value, str):
        return [value]
    return value


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _user_principal(conn: Connection, row: Any) -> Principal:
    role = Role(row.role)
    if role == Role.PLATFORM_ADMIN:
        tenants = None
    else:
        tenants = frozenset(
            conn.execute(
                select(user_tenants.c.tenant_id).where(user_tenants.c.user_id == row.id)
            ).scalars()
        )
    return Principal("user", f"user:{row.username}", role, tenants, role in WRITING_ROLES)


# --- credentials management -------------------------------------------------------


def create_user(
    conn: Connection,
    username: str,
    display_name: str,
    role: Role,
    password: str | None,
    tenants: list[str],
) -> int:
    if conn.execute(select(users.c.id).where(users.c.username == username)).first():
        raise invalid_request(f"User {username!r} already exists")
    if role != Role.PLATFORM_ADMIN and not tenants:
        raise invalid_request("Every user but a platform admin belongs to at least one tenant")
    user_id = conn.execute(
        insert(users)
        .values(
            username=username,
            display_name=display_name,
            role=role.value,
            password_hash=_hasher.hash(password) if password else None,
            active=True,
        )
        .returning(users.c.id)
    ).scalar_one()
    for tenant in sorted(set(tenants)):
        conn.execute(insert(user_tenants).values(user_id=user_id, tenant_id=tenant))
    return user_id


def issue_token(
    conn: Connection, username: str, password: str, ttl: timedelta
) -> tuple[str, datetime]:
    row = conn.execute(select(users).where(users.c.username == username)).first()
    ok = False
    if row is not None and row.active and row.password_hash:
        try:
            ok = _hasher.verify(row.password_hash, password)
        except VerificationError:
            ok = False
    if not ok:
        raise unauthorized("Wrong user name or password")
    token = "kzt_" + secrets.token_urlsafe(32)
    expires = _now() + ttl
    conn.execute(
        insert(tokens).values(token_sha256=_sha256(token), user_id=row.id, expires_at=expires)
    )
    return token, expires


def revoke_token(conn: Connection, token: str) -> None:
    """Sign out: the token stops working (callers also clear the Authenticator's cache)."""
    conn.execute(delete(tokens).where(tokens.c.token_sha256 == _sha256(token)))


def create_api_key(conn: Connection, tenant: str, can_write: bool, label: str) -> str:
    """Create a key and return it in full; only its hash is kept."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(24)
    conn.execute(
        insert(api_keys).values(
            id=key_id,
            secret_sha256=_sha256(secret),
            tenant_id=tenant,
            can_write=can_write,
            label=label,
        )
    )
    return f"kzk_{key_id}_{secret}"


def list_api_keys(conn: Connection, tenants: frozenset[str] | None) -> list[dict[str, Any]]:
    query = select(
        api_keys.c.id,
        api_keys.c.tenant_id,
        api_keys.c.can_write,
        api_keys.c.label,
        api_keys.c.created_at,
        api_keys.c.revoked_at,
    ).order_by(api_keys.c.created_at)
    if tenants is not None:
        query = query.where(api_keys.c.tenant_id.in_(sorted(tenants)))
    return [dict(r._mapping) for r in conn.execute(query)]


def revoke_api_key(conn: Connection, key_id: str, tenants: frozenset[str] | None) -> bool:
    stmt = update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
    if tenants is not None:
        stmt = stmt.where(api_keys.c.tenant_id.in_(sorted(tenants)))
    return conn.execute(stmt.values(revoked_at=_now())).rowcount > 0

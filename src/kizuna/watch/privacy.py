"""Who may see what about a tag: the rules every watch read goes through.

* A tag's guardians see its name, last seen place and trail, places, notifications,
  missing-person cases and the access log.
* Municipal staff see a tag's name only with a recorded reason, and its positions only
  while a missing-person case they can cite is open; every such look is logged for the
  guardians to read.
* Everyone else (volunteers, other guardians, devices, anonymous) sees nothing about a
  tag: not even whether it exists (404, never 403).

The functions taking a connection look up what the rules rest on (guardians, open cases)
and write the access log inside the caller's transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, select

from kizuna.auth.service import Principal, Role
from kizuna.problems import Problem, forbidden, not_found, unauthorized
from kizuna.watch.base import utc_now
from kizuna.watch.models import access_log, guardians, missing_cases, tags

STAFF_ROLES = frozenset({Role.MUNICIPAL_STAFF, Role.PLATFORM_ADMIN})
MIN_REASON_CHARS = 8


def username_of(principal: Principal) -> str | None:
    """The person behind a principal (users and OIDC), or None for keys and anonymous."""
    if principal.kind == "user":
        return principal.subject.removeprefix("user:")
    if principal.kind == "oidc":
        return principal.subject
    return None


def is_staff(principal: Principal, tenant: str) -> bool:
    return (
        principal.role in STAFF_ROLES and principal.acts_in(tenant) and principal.kind != "api_key"
    )


def tag_not_found(tag_id: str) -> Problem:
    # The same answer whether the tag does not exist or the caller may not see it.
    return not_found(f"No tag {tag_id!r} of yours")


def need_person(principal: Principal) -> str:
    name = username_of(principal)
    if name is None:
        raise unauthorized("Sign in as a person (guardian or staff) for this")
    return name


def need_staff(principal: Principal, tenant: str) -> str:
    name = need_person(principal)
    if not is_staff(principal, tenant):
        raise forbidden("Only municipal staff")
    return name


def need_reason(reason: str | None) -> str:
    text = (reason or "").strip()
    if len(text) < MIN_REASON_CHARS:
        raise Problem(
            400,
            "urn:kizuna:errors:ReasonRequired",
            "A recorded reason is required",
            f"Give the reason for looking (at least {MIN_REASON_CHARS} characters); "
            "it is shown to the guardians",
        )
    return text


def guards(conn: Connection, tenant: str, tag_id: str, username: str | None) -> bool:
    """Whether ``username`` is one of the tag's guardians."""
    if username is None:
        return False
    return (
        conn.execute(
            select(guardians.c.username).where(
                guardians.c.tenant_id == tenant,
                guardians.c.tag_id == tag_id,
                guardians.c.username == username,
            )
        ).first()
        is not None
    )


def acts_as_guardian(conn: Connection, principal: Principal, tenant: str, tag_id: str) -> bool:
    return principal.acts_in(tenant) and guards(conn, tenant, tag_id, username_of(principal))


def need_guardian(conn: Connection, principal: Principal, tenant: str, tag_id: str) -> str:
    """The guardian's user name; 404 for everyone else."""
    if not acts_as_guardian(conn, principal, tenant, tag_id):
        raise tag_not_found(tag_id)
    username = username_of(principal)
    assert username is not None
    return username


def need_staff_for_tag(conn: Connection, principal: Principal, tenant: str, tag_id: str) -> None:
    """404 unless staff of the tenant asks about an existing tag."""
    if not is_staff(principal, tenant) or not tag_exists(conn, tenant, tag_id):
        raise tag_not_found(tag_id)


def tag_exists(conn: Connection, tenant: str, tag_id: str) -> bool:
    return (
        conn.execute(
            select(tags.c.id).where(tags.c.tenant_id == tenant, tags.c.id == tag_id)
        ).first()
        is not None
    )


def open_case(conn: Connection, tenant: str, tag_id: str) -> Any:
    """The tag's open missing-person case (the only time staff see positions), or None."""
    return conn.execute(
        select(missing_cases).where(
            missing_cases.c.tenant_id == tenant,
            missing_cases.c.tag_id == tag_id,
            missing_cases.c.closed_at.is_(None),
        )
    ).first()


def log_access(
    conn: Connection,
    tenant: str,
    tag_id: str,
    principal: Principal,
    action: str,
    reason: str,
    case_id: int | None,
) -> None:
    """Record a staff look at a person or positions, for the guardians to read."""
    conn.execute(
        insert(access_log).values(
            tenant_id=tenant,
            tag_id=tag_id,
            actor=principal.subject,
            action=action,
            reason=reason,
            case_id=case_id,
            at=utc_now(),
        )
    )

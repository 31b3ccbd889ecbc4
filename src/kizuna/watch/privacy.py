"""Who may see what about a tag: the rules every watch read goes through.

* A tag's guardians see its name, last seen place and trail, places, notifications,
  missing-person cases and the access log.
* Municipal staff see a tag's name only with a recorded reason, and its positions only
  while a missing-person case they can cite is open; every such look is logged for the
  guardians to read.
* Everyone else (volunteers, other guardians, devices, anonymous) sees nothing about a
  tag: not even whether it exists (404, never 403).
"""

from __future__ import annotations

from kizuna.auth.service import Principal, Role
from kizuna.problems import Problem

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
    return Problem(404, "ResourceNotFound", "Resource not found", f"No tag {tag_id!r} of yours")


def need_person(principal: Principal) -> str:
    name = username_of(principal)
    if name is None:
        raise Problem(
            401,
            "urn:kizuna:errors:Unauthorized",
            "Authentication required",
            "Sign in as a person (guardian or staff) for this",
        )
    return name


def need_staff(principal: Principal, tenant: str) -> str:
    name = need_person(principal)
    if not is_staff(principal, tenant):
        raise Problem(403, "urn:kizuna:errors:Forbidden", "Not allowed", "Only municipal staff")
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

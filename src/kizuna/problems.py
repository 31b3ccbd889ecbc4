"""RFC 7807 ProblemDetails, with the error types NGSI-LD (ETSI GS CIM 009) defines.

Every module raises :class:`Problem`; the app turns it into an ``application/json``
response. Nothing is written when a Problem escapes a transaction.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

NGSI_LD_ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
KIZUNA_ERRORS = "urn:kizuna:errors:"


class Problem(Exception):
    def __init__(
        self, status: int, type_: str, title: str, detail: str | None = None, **extra: Any
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.type = type_ if ":" in type_ else NGSI_LD_ERRORS + type_
        self.title = title
        self.detail = detail
        self.extra = extra

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "title": self.title}
        if self.detail:
            out["detail"] = self.detail
        out.update(self.extra)
        return out


def problem_response(problem: Problem) -> Response:
    return Response(
        orjson.dumps(problem.body()), status_code=problem.status, media_type="application/json"
    )


def bad_request(detail: str) -> Problem:
    return Problem(400, "BadRequestData", "Bad request data", detail)


def invalid_request(detail: str) -> Problem:
    return Problem(400, "InvalidRequest", "Invalid request", detail)


def not_found(detail: str) -> Problem:
    return Problem(404, "ResourceNotFound", "Resource not found", detail)


def already_exists(detail: str) -> Problem:
    return Problem(409, "AlreadyExists", "Already exists", detail)


def context_not_available(detail: str) -> Problem:
    return Problem(503, "LdContextNotAvailable", "@context not available", detail)


def nonexistent_tenant(tenant: str) -> Problem:
    return Problem(404, "NonexistentTenant", "Tenant does not exist", f"No tenant {tenant!r}")


def unauthorized(detail: str) -> Problem:
    return Problem(401, KIZUNA_ERRORS + "Unauthorized", "Authentication required", detail)


def forbidden(detail: str) -> Problem:
    return Problem(403, KIZUNA_ERRORS + "Forbidden", "Not allowed", detail)

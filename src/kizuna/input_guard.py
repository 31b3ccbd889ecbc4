"""The door every HTTP request passes before any route: body size and NUL characters."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kizuna.problems import Problem, problem_response

# PostgreSQL can store NUL in neither text nor jsonb, so it is refused at the door, the same
# on both databases: in the path and query, and in JSON and form bodies (raw NUL is invalid
# JSON anyway, so there it is the \u0000 escape, not preceded by an escaped backslash).
# File uploads are left alone.
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def _json_nul(data: bytes) -> bool:
    return b"\\u0000" in data and _JSON_NUL.search(data) is not None


def _form_nul(data: bytes) -> bool:
    return b"%00" in data or b"\x00" in data


_CHECKED_BODIES = {
    b"application/json": _json_nul,
    b"application/ld+json": _json_nul,
    b"application/merge-patch+json": _json_nul,
    b"application/geo+json": _json_nul,
    b"application/x-www-form-urlencoded": _form_nul,
}


def _nul() -> Problem:
    return Problem(
        400, "BadRequestData", "Bad request data", "The request contains a NUL character"
    )


class InputGuard:
    """Refuses, before they reach a route, request bodies over the limit (413) and NUL
    characters in the URL or a JSON or form body (400)."""

    def __init__(self, app: ASGIApp, limit: int, uploads: dict[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        # Paths of pages that take data files (exact match) and their larger limit.
        self.uploads = uploads or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or _form_nul(scope["query_string"]):
            await problem_response(_nul())(scope, receive, send)
            return
        limit = self.uploads.get(scope["path"], self.limit)
        too_large = Problem(
            413,
            "urn:kizuna:errors:PayloadTooLarge",
            "Payload too large",
            f"The request body exceeds {limit} bytes",
        )
        nul = None
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await problem_response(too_large)(scope, receive, send)
                return
            if name == b"content-type":
                nul = _CHECKED_BODIES.get(value.split(b";")[0].strip().lower())
        received = 0
        tail = b""  # the end of the previous chunk, for a NUL split between two

        async def guarded_receive() -> Message:
            nonlocal received, tail
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                received += len(body)
                if received > limit:
                    raise too_large
                if nul is not None:
                    if nul(tail + body):
                        raise _nul()
                    tail = (tail + body)[-32:]
            return message

        await self.app(scope, guarded_receive, send)

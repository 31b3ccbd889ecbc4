"""The router every Kizuna module declares its routes on.

FastAPI tries each route of each included router in turn until one matches, at about
1.7 µs a route: a request to the points API walked the ~150 routes of the modules
included before it (0.3 ms, a quarter of a payment request's CPU under load). A module
router first checks the path against what its routes share (their common leading path and
the set of their first segments), so a request passes each other module in one or two
string operations.

A module router carries its routes' full paths (``ModuleRouter(prefix=...)``) and is
included without a further prefix: its gate is read from its own routes.
"""

from __future__ import annotations

from os.path import commonprefix

from fastapi import APIRouter
from starlette._utils import get_route_path
from starlette.routing import Match
from starlette.types import Scope


class ModuleRouter(APIRouter):
    _prefix_gate = ""
    _segment_gate: frozenset[str] | None = None
    _gated_routes = -1

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if len(self.routes) != self._gated_routes:  # routes are added after construction
            self._prefix_gate, self._segment_gate = _gates(self)
            self._gated_routes = len(self.routes)
        path = get_route_path(scope)
        if not path.startswith(self._prefix_gate):
            return Match.NONE, {}
        if self._segment_gate is not None and _first_segment(path) not in self._segment_gate:
            return Match.NONE, {}
        return super().matches(scope)


def _gates(router: APIRouter) -> tuple[str, frozenset[str] | None]:
    """What every route's path begins with, cut at a ``/`` (so that a trailing-slash
    redirect, which tries the path with or without its last ``/``, still gets through),
    and the set of the routes' first segments (None when one of them is a parameter)."""
    paths = [getattr(route, "path", "{") for route in router.routes]
    statics = [path.split("{", 1)[0] for path in paths]
    shared = commonprefix(statics) if statics else ""
    prefix = shared[: shared.rfind("/")] if "/" in shared else ""
    dynamic = any(
        static != path and "/" not in static[1:]
        for static, path in zip(statics, paths, strict=True)
    )
    return prefix, None if dynamic else frozenset(_first_segment(s) for s in statics)


def _first_segment(path: str) -> str:
    return path[1:].partition("/")[0]

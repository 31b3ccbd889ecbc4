"""The module router's gate only skips routers that cannot match: every path still
reaches the route FastAPI would have chosen without it."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from kizuna.routing import ModuleRouter


def _app() -> FastAPI:
    api = ModuleRouter(prefix="/shop/api")
    pages = ModuleRouter()  # no prefix: routes under several first segments
    anything = ModuleRouter()  # a parameter in the first segment: never gated

    @api.get("/items/{item_id}")
    def item(item_id: int) -> dict:
        return {"router": "api", "item": item_id}

    @api.post("/items")
    def create() -> dict:
        return {"router": "api", "created": True}

    @pages.get("/shop/items")
    def shop_page() -> dict:
        return {"router": "pages", "page": "shop"}

    @pages.get("/login")
    def login() -> dict:
        return {"router": "pages", "page": "login"}

    @anything.get("/{town}/notice")
    def notice(town: str) -> dict:
        return {"router": "anything", "town": town}

    app = FastAPI()
    for router in (api, pages, anything):
        app.include_router(router)
    return app


def test_each_path_reaches_its_route_through_the_gates() -> None:
    client = TestClient(_app())
    assert client.get("/shop/api/items/7").json() == {"router": "api", "item": 7}
    assert client.post("/shop/api/items").json() == {"router": "api", "created": True}
    assert client.get("/shop/items").json() == {"router": "pages", "page": "shop"}
    assert client.get("/login").json() == {"router": "pages", "page": "login"}
    assert client.get("/takasago/notice").json() == {"router": "anything", "town": "takasago"}


def test_gates_keep_405_404_and_trailing_slash_redirects() -> None:
    client = TestClient(_app())
    assert client.delete("/shop/api/items").status_code == 405
    assert client.get("/nowhere/at/all").status_code == 404
    redirect = client.get("/login/", follow_redirects=False)
    assert redirect.status_code == 307 and redirect.headers["location"].endswith("/login")


def test_the_gates_are_what_the_routes_share() -> None:
    app = _app()
    client = TestClient(app)
    client.get("/login")  # the gates are computed on first use
    gates = [
        (r.original_router._prefix_gate, r.original_router._segment_gate)
        for r in app.router.routes
        if hasattr(r, "original_router")
    ]
    assert gates == [
        ("/shop/api", frozenset({"shop"})),
        ("", frozenset({"shop", "login"})),
        ("", None),
    ]


def test_kizuna_includes_every_module_router_without_a_further_prefix() -> None:
    """The gates are read from a router's own route paths; a prefix added at include time
    would make them turn every request away."""
    from kizuna.app import create_app

    included = [r for r in create_app().router.routes if hasattr(r, "original_router")]
    assert included and all(isinstance(r.original_router, ModuleRouter) for r in included)
    assert all(r.include_context.prefix == "" for r in included)

"""Privacy rules, checked through every watch endpoint (API and pages).

* A guardian of tag B never sees anything of tag A; a volunteer (and their phone) never
  sees any identity; staff see a person only with a recorded reason, positions only in
  missing-person mode; every such look is in the access log the guardian reads.
* Retention deletes old detections; published counts hold no trail.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from starlette.routing import Route

from kizuna.auth.service import SYSTEM
from kizuna.broker.ngsild import Rendering
from kizuna.broker.service import Query
from kizuna.watch.models import detections, guardians, places
from kizuna.watch.routes import router as api_router
from tests.watch.conftest import SCHOOL, STATION, detection

PLACE_NAME = "ひまわり保育園"
JST_OFFSET = timedelta(hours=9)


def _same_jst_day_as_the_last_half_hour() -> datetime:
    """Now, or just before midnight in Japan when the last half hour crossed it: the
    detections 30 and 5 minutes before it fall on one JST day, the day of a trail."""
    now = datetime.now(UTC)
    jst_midnight = (now + JST_OFFSET).replace(hour=0, minute=0, second=0, microsecond=0)
    since_midnight = now + JST_OFFSET - jst_midnight
    return (
        now
        if since_midnight > timedelta(minutes=31)
        else now - since_midnight - timedelta(minutes=1)
    )


def _seed_tag_a(town) -> dict:  # noqa: ANN001
    """Tag A with a place, detections, a notification, a closed case and log entries."""
    tag = town.tags["hanako"]
    headers = town.as_user("hanako")
    place = town.client.post(
        f"/watch/v1/tags/{tag}/places",
        json={"name": PLACE_NAME, "kind": "daycare", "lat": SCHOOL[0], "lon": SCHOOL[1]},
        headers=headers,
    ).json()
    now = _same_jst_day_as_the_last_half_hour()
    items = [
        detection(1, tag, at=now - timedelta(minutes=30), lat=34.7612, lon=134.8377),
        detection(2, tag, at=now - timedelta(minutes=5), lat=SCHOOL[0], lon=SCHOOL[1]),
    ]
    r = town.client.post(
        "/watch/v1/detections", json={"detections": items}, headers=town.as_device("phone-vol")
    )
    assert r.json()["accepted"] == 2
    staff = town.as_user("staff")
    case = town.client.post(
        "/watch/v1/missing-cases",
        json={"tag_id": tag, "reason": "保護者からの捜索依頼 (テスト)"},
        headers=staff,
    ).json()
    town.client.post(f"/watch/v1/missing-cases/{case['id']}/close", headers=staff)
    notes = town.client.get("/watch/v1/notifications", headers=headers).json()
    return {
        "detected_at": now,
        "tag_id": tag,
        "place_id": place["id"],
        "case_id": case["id"],
        "notification_id": notes[0]["id"],
        "gauge_id": "none",
    }


def _secrets_of_a(town) -> list[str]:  # noqa: ANN001
    return [
        town.labels["hanako"],
        town.username("hanako"),
        PLACE_NAME,
        "34.7612",
        "134.8377",
        "hanako san",
    ]


def _watch_routes() -> list[tuple[str, str]]:
    """Every route of the watch module: its API and its pages."""
    out = []
    routers = [api_router]
    with contextlib.suppress(ImportError):
        from kizuna.watch.pages import router as pages_router

        routers.append(pages_router)
    for route in (r for router in routers for r in router.routes):
        if isinstance(route, Route):
            for method in sorted(route.methods - {"HEAD"}):
                out.append((method, route.path))
    return out


BODIES = {
    "/watch/v1/devices": {"id": "evil", "kind": "fixed", "name": "x", "lat": 34.7, "lon": 134.8},
    "/watch/v1/tags/claim": {
        "tag_id": "{tag_id}",
        "claim_code": "12345678",
        "label": "x",
        "person_kind": "child",
        "consent": {"agreed": True, "given_by": "x", "relation": "x"},
    },
    "/watch/v1/tags/{tag_id}/settings": {
        "not_seen_hours": 1,
        "webhook_url": "https://hooks.example.invalid/x",
    },
    "/watch/v1/tags/{tag_id}/guardians": {"username": "{me}", "relation": "x"},
    "/watch/v1/tags/{tag_id}/places": {"name": "x", "kind": "home", "lat": 34.7, "lon": 134.8},
    "/watch/v1/missing-cases": {"tag_id": "{tag_id}", "reason": "just curious, let me look"},
    "/watch/v1/tags/issue": {"count": 1},
    "/watch/v1/detections": {"detections": []},
}


def _fill(value, ids: dict, me: str):  # noqa: ANN001, ANN202
    if isinstance(value, str):
        return value.format(me=me, **ids) if "{" in value else value
    if isinstance(value, dict):
        return {k: _fill(v, ids, me) for k, v in value.items()}
    return value


CALLERS = ["taro", "vol", "phone", "anonymous", "outsider", "staff"]


@pytest.mark.parametrize("caller", CALLERS)
def test_nobody_but_the_guardian_learns_anything_of_tag_a_through_any_endpoint(town, caller):
    ids = _seed_tag_a(town)
    secrets = _secrets_of_a(town)
    if caller == "phone":
        headers = town.as_device("phone-vol")
    elif caller == "anonymous":
        headers = {"NGSILD-Tenant": town.tenant}
    else:
        headers = town.as_user(caller)
    me = town.username(caller) if caller in ("taro", "vol", "outsider", "staff") else "x"
    routes = _watch_routes()
    assert len(routes) >= 25
    checked = 0
    for method, path in routes:
        if caller == "staff" and (method, path) == ("POST", "/watch/v1/missing-cases"):
            continue  # opening a case with a reason is staff's legitimate way in (tested apart)
        url = re.sub(r"\{(\w+)\}", lambda m: str(ids[m.group(1)]), path)
        body = _fill(BODIES.get(path), ids, me)
        for extra in (
            "",
            "?date=" + datetime.now(UTC).date().isoformat(),
            "?hour=" + datetime.now(UTC).isoformat(),
        ):
            response = town.client.request(
                method, url + extra, headers=headers | {"Accept": "application/json"}, json=body
            )
            text = response.text
            for secret in secrets:
                assert secret not in text, f"{caller} saw {secret!r} via {method} {path}{extra}"
            checked += 1
    assert checked >= 75
    # And nothing of A was changed by those attempts.
    watch = town.watch
    with watch.engine.connect() as conn:
        owners = (
            conn.execute(select(guardians.c.username).where(guardians.c.tag_id == ids["tag_id"]))
            .scalars()
            .all()
        )
        assert owners == [town.username("hanako")]
        assert (
            conn.execute(select(func.count()).where(places.c.tag_id == ids["tag_id"])).scalar_one()
            == 1
        )
        assert (
            conn.execute(
                select(func.count()).where(detections.c.tag_id == ids["tag_id"])
            ).scalar_one()
            == 2
        )
    tag = town.client.get(f"/watch/v1/tags/{ids['tag_id']}", headers=town.as_user("hanako")).json()
    assert tag["not_seen_hours"] is None


def test_the_guardian_sees_everything_of_their_tag(town):
    ids = _seed_tag_a(town)
    headers = town.as_user("hanako")
    tag = ids["tag_id"]
    assert (
        town.client.get(f"/watch/v1/tags/{tag}", headers=headers).json()["label"]
        == town.labels["hanako"]
    )
    day = (ids["detected_at"] + JST_OFFSET).date()
    trail = town.client.get(f"/watch/v1/tags/{tag}/trail?date={day}", headers=headers).json()
    assert len(trail) == 2
    assert (
        town.client.get(f"/watch/v1/tags/{tag}/places", headers=headers).json()[0]["name"]
        == PLACE_NAME
    )
    log = town.client.get(f"/watch/v1/tags/{tag}/access-log", headers=headers).json()
    assert {e["action"] for e in log} == {"open_case", "close_case"}


def test_staff_see_a_person_only_with_a_reason_and_it_is_logged(town):
    ids = _seed_tag_a(town)
    staff = town.as_user("staff")
    tag = ids["tag_id"]
    rows = town.client.get("/watch/v1/staff/tags", headers=staff).json()
    assert {r["id"] for r in rows} >= {tag} and all(
        set(r) == {"id", "claimed", "missing_case_open"} for r in rows
    )
    reason = "保護者から電話で問い合わせ（本人確認済み）"
    seen = town.client.get(f"/watch/v1/tags/{tag}", params={"reason": reason}, headers=staff)
    assert seen.status_code == 200 and seen.json()["label"] == town.labels["hanako"]
    log = town.client.get(f"/watch/v1/tags/{tag}/access-log", headers=town.as_user("hanako")).json()
    assert log[0]["action"] == "view_identity" and log[0]["reason"] == reason
    # Residents cannot use the staff path, reason or not.
    assert (
        town.client.get(
            f"/watch/v1/tags/{tag}", params={"reason": reason}, headers=town.as_user("vol")
        ).status_code
        == 404
    )


def test_retention_deletes_old_detections_only(town):
    tag = town.tags["taro"]
    now = datetime.now(UTC)
    items = [detection(n, tag, at=now - timedelta(days=days)) for n, days in enumerate((0, 5, 29))]
    town.client.post(
        "/watch/v1/detections", json={"detections": items}, headers=town.as_device("rx-1")
    )
    # A device cannot even send what retention would delete.
    old = town.client.post(
        "/watch/v1/detections",
        json={"detections": [detection(9, tag, at=now - timedelta(days=31))]},
        headers=town.as_device("rx-1"),
    ).json()
    assert old["errors"][0]["reason"] == "too_old"

    def left() -> int:
        with town.watch.engine.connect() as conn:
            return conn.execute(select(func.count()).where(detections.c.tag_id == tag)).scalar_one()

    assert town.watch.apply_retention(now + timedelta(days=2)) >= 1  # the 29-day-old one
    assert left() == 2
    town.watch.apply_retention(now + timedelta(days=31))
    assert left() == 0


def test_published_counts_withhold_small_groups_and_hold_no_trail(town):
    watch = town.watch
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    # One child alone walks across four cells during the hour: nothing may be published.
    lone = town.tags["hanako"]
    walk = [
        detection(n, lone, at=hour + timedelta(minutes=10 * n), lat=34.745 + 0.01 * n, lon=134.835)
        for n in range(4)
    ]
    town.client.post(
        "/watch/v1/detections", json={"detections": walk}, headers=town.as_device("phone-vol")
    )
    assert watch.hourly_counts(town.tenant, hour) == []
    assert watch.publish_counts(town.tenant, hour) == []
    # Six tags at the station: that cell is published, as counts only.
    crowd = [
        detection(
            100 + n, f"crowd-{n}", at=hour + timedelta(minutes=n), lat=STATION[0], lon=STATION[1]
        )
        for n in range(6)
    ]
    town.client.post(
        "/watch/v1/detections", json={"detections": crowd}, headers=town.as_device("phone-vol")
    )
    published = watch.publish_counts(town.tenant, hour)
    assert len(published) == 1
    scope = town.app.state.services.tenants.scope(SYSTEM, town.tenant, write=False)
    core = town.app.state.services.broker.contexts.core
    found = town.app.state.services.broker.query(
        scope, core, Query(type_expression="DetectionCount", limit=100), Rendering()
    ).entities
    assert len(found) == 1
    entity = found[0]
    assert entity["distinctTags"]["value"] == 6 and entity["detectionCount"]["value"] == 6
    text = str(entity)
    assert lone not in text and "crowd-" not in text and "rx-" not in text and "phone" not in text
    # The public API gives the same aggregate, and nothing below the minimum.
    public = town.client.get(
        "/watch/v1/counts",
        params={"hour": hour.isoformat()},
        headers={"NGSILD-Tenant": town.tenant},
    ).json()
    assert [c["distinctTags"] for c in public] == [6]

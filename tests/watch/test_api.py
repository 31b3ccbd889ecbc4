"""The watch API on both dialects: uploads, guardians' view, places, missing-person mode."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.watch.conftest import SCHOOL, STATION, detection


def test_phone_upload_reaches_the_guardian_and_says_nothing_about_whom(town):
    tag = town.tags["hanako"]
    items = [
        detection(1, tag, lat=STATION[0], lon=STATION[1]),
        detection(2, tag, lat=34.76, lon=134.84),
    ]
    response = town.client.post(
        "/watch/v1/detections", json={"detections": items}, headers=town.as_device("phone-vol")
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 2, "duplicates": 0, "rejected": 0, "errors": []}
    again = town.client.post(
        "/watch/v1/detections", json={"detections": items}, headers=town.as_device("phone-vol")
    )
    assert again.json()["duplicates"] == 2 and again.json()["accepted"] == 0
    mine = town.client.get(f"/watch/v1/tags/{tag}", headers=town.as_user("hanako")).json()
    assert mine["label"] == "高砂 はな" and mine["last_seen"]["detector_kind"] == "phone"
    trail = town.client.get(f"/watch/v1/tags/{tag}/trail", headers=town.as_user("hanako")).json()
    assert len(trail) == 2
    summary = town.client.get("/watch/v1/volunteer/me", headers=town.as_user("vol")).json()
    assert summary["today_detections"] == 2


def test_bad_items_are_reported_and_the_good_ones_kept(town):
    tag = town.tags["hanako"]
    items = [
        detection(1, tag),  # a fixed receiver's own position is used
        {"id": "x", "tag": tag, "at": "yesterday"},
        {"id": "y", "tag": tag, "at": (datetime.now(UTC) + timedelta(hours=2)).isoformat()},
        {"id": "z", "tag": "", "at": datetime.now(UTC).isoformat()},
        "not an object",
    ]
    response = town.client.post(
        "/watch/v1/detections", json={"detections": items}, headers=town.as_device("rx-1")
    )
    body = response.json()
    assert body["accepted"] == 1 and body["rejected"] == 4
    assert {e["reason"] for e in body["errors"]} == {
        "bad_time",
        "future_time",
        "bad_tag",
        "bad_item",
    }
    # A moving detector must say where it was.
    car = town.client.post(
        "/watch/v1/detections",
        json={"detections": [detection(9, tag)]},
        headers=town.as_device("car-1"),
    ).json()
    assert car["rejected"] == 1 and car["errors"][0]["reason"] == "bad_position"


def test_devices_need_their_own_key(town):
    body = {"detections": [detection(1, town.tags["hanako"])]}
    wrong = town.client.post(
        "/watch/v1/detections",
        json=body,
        headers={"Authorization": "Device rx-1:nope", "NGSILD-Tenant": town.tenant},
    )
    assert wrong.status_code == 401
    other_device = town.credentials["rx-school"].split(":")[1]
    stolen = town.client.post(
        "/watch/v1/detections",
        json=body,
        headers={"Authorization": f"Device rx-1:{other_device}", "NGSILD-Tenant": town.tenant},
    )
    assert stolen.status_code == 401
    other_town = town.client.post(
        "/watch/v1/detections",
        json=body,
        headers={
            "Authorization": f"Device {town.credentials['rx-1']}",
            "NGSILD-Tenant": town.other_tenant,
        },
    )
    assert other_town.status_code == 401


def test_arrival_and_departure_notify_in_app_and_by_webhook(town):
    tag = town.tags["hanako"]
    headers = town.as_user("hanako")
    place = town.client.post(
        f"/watch/v1/tags/{tag}/places",
        json={"name": "加古川小学校", "kind": "school", "lat": SCHOOL[0], "lon": SCHOOL[1]},
        headers=headers,
    )
    assert place.status_code == 201, place.text
    plain = town.client.patch(
        f"/watch/v1/tags/{tag}/settings",
        json={"webhook_url": "http://127.0.0.1:5432/"},
        headers=headers,
    )
    assert plain.status_code == 400  # https only: no posting into the server's own network
    town.client.patch(
        f"/watch/v1/tags/{tag}/settings",
        json={"webhook_url": "https://hooks.example.invalid/hook"},
        headers=headers,
    )
    now = datetime.now(UTC)
    steps = [
        ("rx-1", now - timedelta(minutes=40)),  # at the station: outside
        ("rx-school", now - timedelta(minutes=20)),  # arrives at school
        ("rx-school", now - timedelta(minutes=10)),  # still there: nothing new
        ("rx-1", now - timedelta(minutes=1)),  # leaves
    ]
    for n, (device, at) in enumerate(steps):
        r = town.client.post(
            "/watch/v1/detections",
            json={"detections": [detection(n, tag, at=at)]},
            headers=town.as_device(device),
        )
        assert r.json()["accepted"] == 1
    notes = town.client.get("/watch/v1/notifications", headers=headers).json()
    assert [n["kind"] for n in notes] == ["departure", "arrival"]
    assert "加古川小学校に到着しました" in notes[1]["text"]
    # Taro (guardian of another tag) sees none of it.
    assert town.client.get("/watch/v1/notifications", headers=town.as_user("taro")).json() == []

    class Hook:
        def __init__(self) -> None:
            self.posts = []

        def post(self, url, json, timeout):  # noqa: ANN001, A002
            self.posts.append((url, json))
            return type("R", (), {"status_code": 204})()

    hook = Hook()
    assert town.watch.deliver_webhooks(hook) == 2
    assert {p[1]["event"] for p in hook.posts} == {"arrival", "departure"}
    assert all("高砂" not in str(p[1]) for p in hook.posts)  # no name in webhooks
    assert town.watch.deliver_webhooks(hook) == 0  # delivered once


def test_not_seen_for_n_hours_notifies_once_until_seen_again(town):
    tag = town.tags["taro"]
    headers = town.as_user("taro")
    town.client.patch(f"/watch/v1/tags/{tag}/settings", json={"not_seen_hours": 2}, headers=headers)
    seen = datetime.now(UTC) - timedelta(hours=3)
    town.client.post(
        "/watch/v1/detections",
        json={"detections": [detection(1, tag, at=seen)]},
        headers=town.as_device("rx-1"),
    )
    assert town.watch.check_not_seen() == 1
    assert town.watch.check_not_seen() == 0
    kinds = [n["kind"] for n in town.client.get("/watch/v1/notifications", headers=headers).json()]
    assert kinds == ["not_seen"]
    town.client.post(
        "/watch/v1/detections",
        json={"detections": [detection(2, tag)]},
        headers=town.as_device("rx-1"),
    )
    assert town.watch.check_not_seen() == 0
    assert town.watch.check_not_seen(datetime.now(UTC) + timedelta(hours=3)) == 1


def test_missing_person_mode_is_reasoned_logged_and_shown_to_the_guardian(town):
    tag = town.tags["hanako"]
    town.client.post(
        "/watch/v1/detections",
        json={"detections": [detection(1, tag)]},
        headers=town.as_device("rx-1"),
    )
    staff = town.as_user("staff")
    assert town.client.get(f"/watch/v1/tags/{tag}/trail", headers=staff).status_code == 403
    assert town.client.get(f"/watch/v1/tags/{tag}", headers=staff).status_code == 400  # no reason
    short = town.client.post(
        "/watch/v1/missing-cases", json={"tag_id": tag, "reason": "x"}, headers=staff
    )
    assert short.status_code == 400
    reason = "保護者から下校後に帰宅しないと通報（警察と連携）"
    case = town.client.post(
        "/watch/v1/missing-cases", json={"tag_id": tag, "reason": reason}, headers=staff
    )
    assert case.status_code == 201, case.text
    trail = town.client.get(f"/watch/v1/tags/{tag}/trail", headers=staff)
    assert trail.status_code == 200 and len(trail.json()) == 1
    # Staff of another town see nothing.
    assert town.client.get(
        f"/watch/v1/tags/{tag}/trail", headers=town.as_user("outsider")
    ).status_code in (403, 404)
    closed = town.client.post(f"/watch/v1/missing-cases/{case.json()['id']}/close", headers=staff)
    assert closed.json()["closed_at"] is not None
    assert town.client.get(f"/watch/v1/tags/{tag}/trail", headers=staff).status_code == 403
    guardian = town.as_user("hanako")
    log = town.client.get(f"/watch/v1/tags/{tag}/access-log", headers=guardian).json()
    assert [e["action"] for e in log] == ["close_case", "view_trail", "open_case"]
    assert all(e["reason"] == reason for e in log) and all(
        e["actor"] == f"user:{town.username('staff')}" for e in log
    )
    cases = town.client.get(f"/watch/v1/tags/{tag}/missing-cases", headers=guardian).json()
    assert cases[0]["reason"] == reason
    notes = town.client.get("/watch/v1/notifications", headers=guardian).json()
    assert {n["kind"] for n in notes} >= {"missing_opened", "missing_closed"}
    assert any(reason in n["text"] for n in notes)


def test_claiming_needs_the_code_and_works_once(town):
    watch = town.watch
    from kizuna.auth.service import SYSTEM
    from kizuna.watch import schemas

    issued = watch.issue_tags(SYSTEM, town.tenant, schemas.TagIssue(count=1))[0]
    body = {
        "tag_id": issued.id,
        "claim_code": "00000000" if issued.claim_code != "00000000" else "11111111",
        "label": "x",
        "person_kind": "elder",
        "consent": {"agreed": True, "given_by": "me", "relation": "子"},
    }
    assert (
        town.client.post("/watch/v1/tags/claim", json=body, headers=town.as_user("vol")).status_code
        == 400
    )
    body["claim_code"] = issued.claim_code
    ok = town.client.post("/watch/v1/tags/claim", json=body, headers=town.as_user("vol"))
    assert ok.status_code == 201 and ok.json()["consent"]["agreed"] is True
    assert (
        town.client.post(
            "/watch/v1/tags/claim", json=body, headers=town.as_user("taro")
        ).status_code
        == 400
    )
    body["consent"]["agreed"] = False
    assert (
        town.client.post(
            "/watch/v1/tags/claim", json=body, headers=town.as_user("taro")
        ).status_code
        == 400
    )

"""The NGSI-LD entity API end to end through HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from kizuna.settings import ETSI_TEST_CONTEXT_BASE

BASE = "/ngsi-ld/v1"
LD = {"Content-Type": "application/ld+json"}
SUITE_CONTEXT = ETSI_TEST_CONTEXT_BASE + "ngsi-ld-test-suite-compound.jsonld"


def shelter(n: int, **extra) -> dict:
    return {
        "id": f"urn:ngsi-ld:EvacuationShelter:{n:03d}",
        "type": "EvacuationShelter",
        "name": {
            "type": "LanguageProperty",
            "languageMap": {"ja": f"避難所{n}", "en": f"Shelter {n}"},
        },
        "capacity": {"type": "Property", "value": 100 * n, "unitCode": "IE"},
        "location": {
            "type": "GeoProperty",
            "value": {"type": "Point", "coordinates": [134.79, 34.76]},
        },
        **extra,
    }


def test_create_retrieve_replace_delete(client):
    r = client.post(f"{BASE}/entities", json=shelter(1))
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"{BASE}/entities/urn:ngsi-ld:EvacuationShelter:001"
    again = client.post(f"{BASE}/entities", json=shelter(1))
    assert again.status_code == 409
    assert again.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/AlreadyExists"

    got = client.get(f"{BASE}/entities/urn:ngsi-ld:EvacuationShelter:001").json()
    assert got["capacity"] == {"type": "Property", "value": 100, "unitCode": "IE"}
    assert got["name"]["languageMap"]["ja"] == "避難所1"
    assert "createdAt" not in got

    r = client.put(
        f"{BASE}/entities/urn:ngsi-ld:EvacuationShelter:001",
        json={"type": "EvacuationShelter", "capacity": {"type": "Property", "value": 7}},
    )
    assert r.status_code == 204, r.text
    got = client.get(f"{BASE}/entities/urn:ngsi-ld:EvacuationShelter:001").json()
    assert set(got) == {"id", "type", "capacity"}

    assert client.delete(f"{BASE}/entities/urn:ngsi-ld:EvacuationShelter:001").status_code == 204
    assert client.get(f"{BASE}/entities/urn:ngsi-ld:EvacuationShelter:001").status_code == 404
    assert client.delete(f"{BASE}/entities/urn:ngsi-ld:EvacuationShelter:001").status_code == 404


def test_representations(client):
    client.post(f"{BASE}/entities", json=shelter(2))
    url = f"{BASE}/entities/urn:ngsi-ld:EvacuationShelter:002"
    kv = client.get(url, params={"options": "keyValues"}).json()
    assert kv["capacity"] == 200
    assert kv["location"] == {"type": "Point", "coordinates": [134.79, 34.76]}
    concise = client.get(url, params={"format": "concise"}).json()
    assert concise["capacity"] == {"value": 200, "unitCode": "IE"}
    sys_attrs = client.get(url, params={"options": "sysAttrs"}).json()
    assert sys_attrs["createdAt"].endswith("Z") and "modifiedAt" in sys_attrs["capacity"]
    lang = client.get(url, params={"lang": "en"}).json()
    assert lang["name"] == {"type": "Property", "value": "Shelter 2", "lang": "en"}
    picked = client.get(url, params={"pick": "id,capacity"}).json()
    assert picked == {
        "id": "urn:ngsi-ld:EvacuationShelter:002",
        "capacity": {"type": "Property", "value": 200, "unitCode": "IE"},
    }
    omitted = client.get(url, params={"omit": "name,location"}).json()
    assert set(omitted) == {"id", "type", "capacity"}
    assert client.get(url, params={"options": "keyValues,concise"}).status_code == 400
    assert client.get(url, params={"pick": "name", "omit": "name"}).status_code == 400


def test_context_from_link_header_and_body(client, suite_contexts):
    body = {
        "id": "urn:ngsi-ld:Building:ctx1",
        "type": "Building",
        "name": {"type": "Property", "value": "Hall"},
        "@context": [SUITE_CONTEXT],
    }
    assert client.post(f"{BASE}/entities", json=body, headers=LD).status_code == 201
    link = (
        f'<{SUITE_CONTEXT}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
    )
    with_ctx = client.get(f"{BASE}/entities/urn:ngsi-ld:Building:ctx1", headers={"Link": link})
    assert with_ctx.json()["type"] == "Building"
    without = client.get(f"{BASE}/entities/urn:ngsi-ld:Building:ctx1").json()
    assert without["type"] == "https://ngsi-ld-test-suite/context#Building"
    as_ld = client.get(
        f"{BASE}/entities/urn:ngsi-ld:Building:ctx1",
        headers={"Link": link, "Accept": "application/ld+json"},
    )
    assert as_ld.headers["content-type"].startswith("application/ld+json")
    assert as_ld.json()["@context"] == SUITE_CONTEXT
    # @context in an application/json body is an error, and so is ld+json without one.
    bad = {**body, "id": "urn:ngsi-ld:Building:ctx2"}
    assert client.post(f"{BASE}/entities", json=bad).status_code == 400
    del bad["@context"]
    assert client.post(f"{BASE}/entities", json=bad, headers=LD).status_code == 400


def test_attribute_operations(client):
    client.post(f"{BASE}/entities", json=shelter(3))
    url = f"{BASE}/entities/urn:ngsi-ld:EvacuationShelter:003"
    r = client.post(f"{url}/attrs", json={"open": {"type": "Property", "value": True}})
    assert r.status_code == 204
    r = client.post(
        f"{url}/attrs",
        params={"options": "noOverwrite"},
        json={"capacity": {"type": "Property", "value": 1}},
    )
    assert r.status_code == 207
    assert r.json()["notUpdated"][0]["attributeName"] == "capacity"
    assert client.get(url, params={"options": "keyValues"}).json()["capacity"] == 300

    r = client.patch(
        f"{url}/attrs", json={"capacity": {"type": "Property", "value": 350}, "ghost": {"value": 1}}
    )
    assert r.status_code == 207 and r.json()["updated"] == ["capacity"]
    # PATCH /attrs replaced the whole attribute (its unitCode went with it); a partial
    # update keeps what it does not mention.
    client.patch(f"{url}/attrs/capacity", json={"unitCode": "IE"})
    r = client.patch(f"{url}/attrs/capacity", json={"value": 360})
    assert r.status_code == 204
    got = client.get(url).json()["capacity"]
    assert got == {"type": "Property", "value": 360, "unitCode": "IE"}
    assert client.patch(f"{url}/attrs/ghost", json={"value": 1}).status_code == 404

    assert client.delete(f"{url}/attrs/open").status_code == 204
    assert client.delete(f"{url}/attrs/open").status_code == 404
    assert "open" not in client.get(url).json()


def test_dataset_instances(client):
    body = shelter(
        4,
        temperature=[
            {"type": "Property", "value": 20},
            {"type": "Property", "value": 21, "datasetId": "urn:ngsi-ld:Dataset:sensorB"},
        ],
    )
    assert client.post(f"{BASE}/entities", json=body).status_code == 201
    url = f"{BASE}/entities/urn:ngsi-ld:EvacuationShelter:004"
    assert len(client.get(url).json()["temperature"]) == 2
    r = client.delete(
        f"{url}/attrs/temperature", params={"datasetId": "urn:ngsi-ld:Dataset:sensorB"}
    )
    assert r.status_code == 204
    assert client.get(url).json()["temperature"] == {"type": "Property", "value": 20}


def test_merge_patch_deletes_with_ngsi_ld_null(client):
    client.post(f"{BASE}/entities", json=shelter(5))
    url = f"{BASE}/entities/urn:ngsi-ld:EvacuationShelter:005"
    r = client.patch(
        url,
        json={
            "capacity": {"value": 555},
            "name": "urn:ngsi-ld:null",
            "manager": {"object": "urn:ngsi-ld:Person:1"},
        },
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 204, r.text
    got = client.get(url).json()
    assert got["capacity"] == {"type": "Property", "value": 555, "unitCode": "IE"}
    assert "name" not in got
    assert got["manager"] == {"type": "Relationship", "object": "urn:ngsi-ld:Person:1"}


def test_batch_operations_report_per_entity(client):
    items = [shelter(n) for n in range(10, 15)] + [{"id": "not a uri", "type": "X"}]
    r = client.post(f"{BASE}/entityOperations/create", json=items)
    assert r.status_code == 207
    body = r.json()
    assert len(body["success"]) == 5 and body["errors"][0]["entityId"] == "not a uri"
    assert body["errors"][0]["error"]["type"].endswith("BadRequestData")

    r = client.post(f"{BASE}/entityOperations/create", json=[shelter(10)])
    assert r.status_code == 207 and r.json()["errors"][0]["error"]["status"] == 409

    r = client.post(f"{BASE}/entityOperations/upsert", json=[shelter(10), shelter(20)])
    assert r.status_code == 201 and r.json() == ["urn:ngsi-ld:EvacuationShelter:020"]
    r = client.post(f"{BASE}/entityOperations/upsert", json=[shelter(10)])
    assert r.status_code == 204

    r = client.post(
        f"{BASE}/entityOperations/update",
        json=[
            {
                "id": "urn:ngsi-ld:EvacuationShelter:011",
                "capacity": {"type": "Property", "value": 9},
            },
            {
                "id": "urn:ngsi-ld:EvacuationShelter:999",
                "capacity": {"type": "Property", "value": 9},
            },
        ],
    )
    assert r.status_code == 207 and r.json()["success"] == ["urn:ngsi-ld:EvacuationShelter:011"]

    r = client.post(
        f"{BASE}/entityOperations/merge",
        json=[
            {
                "id": "urn:ngsi-ld:EvacuationShelter:012",
                "type": "EvacuationShelter",
                "capacity": {"value": 8},
            }
        ],
    )
    assert r.status_code == 204
    got = client.get(
        f"{BASE}/entities/urn:ngsi-ld:EvacuationShelter:012", params={"options": "keyValues"}
    )
    assert got.json()["capacity"] == 8

    r = client.post(
        f"{BASE}/entityOperations/delete", json=["urn:ngsi-ld:EvacuationShelter:013", "urn:x:none"]
    )
    assert r.status_code == 207 and r.json()["success"] == ["urn:ngsi-ld:EvacuationShelter:013"]


def test_query_filters_and_pagination(client):
    items = [shelter(n, level={"type": "Property", "value": n % 3}) for n in range(1, 26)]
    items.append(
        {"id": "urn:ngsi-ld:AED:1", "type": "AED", "level": {"type": "Property", "value": 2}}
    )
    assert client.post(f"{BASE}/entityOperations/create", json=items).status_code == 201

    def ids(**params):
        r = client.get(f"{BASE}/entities", params={"limit": 100, **params})
        assert r.status_code == 200, r.text
        return [e["id"] for e in r.json()]

    assert len(ids(type="EvacuationShelter")) == 25
    assert len(ids(type="EvacuationShelter,AED")) == 26
    assert ids(type="EvacuationShelter;AED") == []
    assert ids(
        type="AED,EvacuationShelter", id="urn:ngsi-ld:AED:1,urn:ngsi-ld:EvacuationShelter:002"
    ) == ["urn:ngsi-ld:AED:1", "urn:ngsi-ld:EvacuationShelter:002"]  # ordered by id
    assert (
        len(ids(type="EvacuationShelter", idPattern="^urn:ngsi-ld:EvacuationShelter:00[1-3]$")) == 3
    )
    assert len(ids(type="EvacuationShelter", q="level==2")) == 8
    assert len(ids(q="level==2")) == 9
    assert len(ids(type="EvacuationShelter", q="capacity>=2000;level!=0")) == 4
    assert len(ids(attrs="level", type="AED")) == 1

    page = client.get(
        f"{BASE}/entities",
        params={"type": "EvacuationShelter", "limit": 10, "offset": 10, "count": "true"},
    )
    assert page.headers["NGSILD-Results-Count"] == "25"
    assert 'rel="next"' in page.headers["link"] and 'rel="prev"' in page.headers["link"]
    assert len(page.json()) == 10
    only_count = client.get(f"{BASE}/entities", params={"type": "AED", "limit": 0, "count": "true"})
    assert only_count.json() == [] and only_count.headers["NGSILD-Results-Count"] == "1"
    assert client.get(f"{BASE}/entities", params={"type": "AED", "limit": 5000}).status_code == 403
    assert client.get(f"{BASE}/entities").status_code == 400
    assert client.get(f"{BASE}/entities", params={"id": "urn:ngsi-ld:AED:1"}).status_code == 400

    post = client.post(
        f"{BASE}/entityOperations/query",
        json={"type": "Query", "entities": [{"type": "AED"}], "attrs": ["level"]},
    )
    assert post.status_code == 200 and [e["id"] for e in post.json()] == ["urn:ngsi-ld:AED:1"]


def test_near_pages_and_counts_the_same_whether_or_not_an_area_is_among_the_candidates(client):
    # Gauges every ~100 m east along a river: k = 0..6 at k x 100 m from the query point.
    gauges = [
        {
            "id": f"urn:ngsi-ld:WaterGauge:{k}",
            "type": "WaterGauge",
            "location": {
                "type": "GeoProperty",
                "value": {"type": "Point", "coordinates": [134.79 + k * 0.0010941, 34.76]},
            },
        }
        for k in range(7)
    ]
    assert client.post(f"{BASE}/entityOperations/create", json=gauges).status_code == 201

    def near(georel: str, **params: object) -> tuple[list[str], str]:
        r = client.get(
            f"{BASE}/entities",
            params={
                "type": "WaterGauge",
                "georel": georel,
                "geometry": "Point",
                "coordinates": "[134.79,34.76]",
                "count": "true",
                **params,
            },
        )
        assert r.status_code == 200, r.text
        return [e["id"].rsplit(":", 1)[1] for e in r.json()], r.headers["NGSILD-Results-Count"]

    # Points only: the spatial index's candidates decide the answer.
    assert near("near;maxDistance==450") == (["0", "1", "2", "3", "4"], "5")
    assert near("near;maxDistance==450", limit=2, offset=1) == (["1", "2"], "5")
    assert near("near;maxDistance==450;minDistance==150") == (["2", "3", "4"], "3")
    # A basin polygon ~250 m away among the candidates: each entity gets the exact test.
    basin = {
        "id": "urn:ngsi-ld:WaterGauge:basin",
        "type": "WaterGauge",
        "location": {
            "type": "GeoProperty",
            "value": {
                "type": "Polygon",
                "coordinates": [
                    [
                        [134.7927, 34.7601],
                        [134.7938, 34.7601],
                        [134.7938, 34.7610],
                        [134.7927, 34.7610],
                        [134.7927, 34.7601],
                    ]
                ],
            },
        },
    }
    assert client.post(f"{BASE}/entities", json=basin).status_code == 201
    assert near("near;maxDistance==450") == (["0", "1", "2", "3", "4", "basin"], "6")
    assert near("near;maxDistance==450", limit=2, offset=1) == (["1", "2"], "6")
    assert near("near;maxDistance==450;minDistance==150") == (["2", "3", "4", "basin"], "4")


def test_paging_parameters_out_of_range(client):
    client.post(f"{BASE}/entities", json=shelter(1))
    # An offset past every entity (and past 64-bit integers) is an empty page, not an error.
    far = client.get(
        f"{BASE}/entities",
        params={"type": "EvacuationShelter", "offset": "9" * 30, "count": "true"},
    )
    assert far.status_code == 200 and far.json() == []
    assert far.headers["NGSILD-Results-Count"] == "1"
    subscriptions = client.get(f"{BASE}/subscriptions", params={"offset": "9" * 30})
    assert subscriptions.status_code == 200 and subscriptions.json() == []
    # Digits other than ASCII ("²" passes str.isdigit) are refused, not a server error.
    for params in ({"limit": "²"}, {"offset": "²"}, {"joinLevel": "²"}, {"offset": "-1"}):
        r = client.get(f"{BASE}/entities", params={"type": "EvacuationShelter", **params})
        assert r.status_code == 400, (params, r.text)
        assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    assert client.get(f"{BASE}/subscriptions", params={"limit": "²"}).status_code == 400
    # Only the count: no link to a "next" page of nothing.
    watch = {
        "type": "Subscription",
        "entities": [{"type": "EvacuationShelter"}],
        "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}},
    }
    assert client.post(f"{BASE}/subscriptions", json=watch).status_code == 201
    only_count = client.get(f"{BASE}/subscriptions", params={"limit": "0", "count": "true"})
    assert only_count.status_code == 200 and only_count.json() == []
    assert only_count.headers["NGSILD-Results-Count"] == "1"
    assert "next" not in only_count.headers.get("Link", "")


def test_geo_query(client):
    near = shelter(1)
    far = shelter(2)
    far["location"]["value"]["coordinates"] = [135.5, 34.7]  # Osaka
    client.post(f"{BASE}/entityOperations/create", json=[near, far])
    r = client.get(
        f"{BASE}/entities",
        params={
            "type": "EvacuationShelter",
            "georel": "near;maxDistance==2000",
            "geometry": "Point",
            "coordinates": "[134.791,34.761]",
        },
    )
    assert r.status_code == 200, r.text
    assert [e["id"] for e in r.json()] == ["urn:ngsi-ld:EvacuationShelter:001"]
    r = client.get(
        f"{BASE}/entities",
        params={
            "type": "EvacuationShelter",
            "georel": "within",
            "geometry": "Polygon",
            "coordinates": "[[[135,34],[136,34],[136,35],[135,35],[135,34]]]",
        },
    )
    assert [e["id"] for e in r.json()] == ["urn:ngsi-ld:EvacuationShelter:002"]
    bad = client.get(
        f"{BASE}/entities",
        params={"type": "X", "georel": "near", "geometry": "Point", "coordinates": "[1,2]"},
    )
    assert bad.status_code == 400


def test_discovery(client):
    client.post(
        f"{BASE}/entityOperations/create",
        json=[shelter(1), {"id": "urn:ngsi-ld:AED:1", "type": "AED"}],
    )
    assert sorted(client.get(f"{BASE}/types").json()["typeList"]) == ["AED", "EvacuationShelter"]
    info = client.get(f"{BASE}/types/EvacuationShelter").json()
    assert info["entityCount"] == 1 and info["typeName"] == "EvacuationShelter"
    attrs = client.get(f"{BASE}/attributes").json()["attributeList"]
    assert set(attrs) == {"name", "capacity", "location"}
    assert client.get(f"{BASE}/attributes/capacity").json()["attributeCount"] == 1
    assert client.get(f"{BASE}/types/Nothing").status_code == 404


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400),
        (b'{"id": "no uri", "type": "T"}', {"Content-Type": "application/json"}, 400),
        (b'{"id": "urn:a:b", "type": "T"}', {"Content-Type": "text/plain"}, 415),
        (b'{"id": "urn:a:b"}', {"Content-Type": "application/json"}, 400),
        (
            b'{"id": "urn:a:b", "type": "T", "p": {"type": "Property"}}',
            {"Content-Type": "application/json"},
            400,
        ),
        (
            b'{"id": "urn:a:b", "type": "T", "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [999, 1]}}}',
            {"Content-Type": "application/json"},
            400,
        ),
        (
            b'{"id": "urn:a:b", "type": "T", "@context": "http://127.0.0.1:9/nowhere.jsonld"}',
            {"Content-Type": "application/ld+json"},
            503,
        ),
        (
            b'{"id": "urn:a:b", "type": "T", "big": "' + b"x" * 70_000 + b'"}',
            {"Content-Type": "application/json"},
            413,
        ),
        # NUL: PostgreSQL stores it in neither text nor jsonb; refused on both databases.
        (
            b'{"id": "urn:a:b", "type": "T", "p": {"type": "Property", "value": "a\\\\\\u0000"}}',
            {"Content-Type": "application/json"},
            400,
        ),
        (
            b'{"id": "urn:a:b", "type": "T", "p\\u0000": {"type": "Property", "value": 1}}',
            {"Content-Type": "application/ld+json"},
            400,
        ),
    ],
)
def test_bad_input_is_refused_and_writes_nothing(client, body, headers, status):
    r = client.post(f"{BASE}/entities", content=body, headers=headers)
    assert r.status_code == status, r.text
    problem = r.json()
    assert problem["type"] and problem["title"]
    assert client.get(f"{BASE}/entities/urn:a:b").status_code in (404,)


def test_nul_in_the_url_is_refused_and_an_escaped_backslash_is_not_nul(client):
    for url in (f"{BASE}/entities/urn:a:b%00", f"{BASE}/entities?type=T&q=p==%22%00%22"):
        r = client.get(url)
        assert r.status_code == 400 and "NUL" in r.json()["detail"], r.text
    # The text backslash-u0000 (an escaped backslash, then "u0000") is ordinary text.
    body = b'{"id": "urn:a:b", "type": "T", "p": {"type": "Property", "value": "C:\\\\u0000"}}'
    r = client.post(f"{BASE}/entities", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    stored = client.get(f"{BASE}/entities/urn:a:b", params={"options": "keyValues"}).json()
    assert stored["p"] == "C:\\u0000"


@pytest.mark.parametrize(
    "params",
    [
        {"q": "|".join(f"capacity=={n}" for n in range(1000))},
        {"q": "(" * 1000 + "capacity==1" + ")" * 1000},
        {"q": "capacity==" + ",".join(str(n) for n in range(1000))},
        {"type": "(" * 400 + "EvacuationShelter" + ")" * 400},
        {"scopeQ": ",".join(f"/a{n}" for n in range(1000))},
    ],
    ids=["q terms", "q depth", "q list", "type depth", "scopeQ terms"],
)
def test_oversized_query_expressions_are_bad_requests(client, params):
    client.post(f"{BASE}/entities", json=shelter(1))
    r = client.get(f"{BASE}/entities", params={"type": "EvacuationShelter", **params})
    assert r.status_code == 400, r.text[:300]
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"


def test_a_long_attrs_list_is_answered(client):
    client.post(f"{BASE}/entities", json=shelter(1))
    names = [f"extra{n}" for n in range(2000)] + ["capacity"]
    r = client.get(
        f"{BASE}/entities", params={"type": "EvacuationShelter", "attrs": ",".join(names)}
    )
    assert r.status_code == 200, r.text[:300]
    assert [set(e) for e in r.json()] == [{"id", "type", "capacity"}]


@pytest.mark.parametrize(
    "entity",
    [
        {"id": "urn:a:b", "type": "T" * 1100},
        {"id": "urn:a:b", "type": "T", "p" * 1100: {"type": "Property", "value": 1}},
    ],
    ids=["type", "attribute"],
)
def test_names_too_long_to_store_are_refused(client, entity):
    r = client.post(f"{BASE}/entities", json=entity)
    assert r.status_code == 400, r.text[:300]
    assert client.get(f"{BASE}/entities/urn:a:b").status_code == 404


@pytest.mark.parametrize("method", ["put", "patch"])
def test_a_non_object_body_for_replace_or_merge_is_a_bad_request(client, method):
    client.post(f"{BASE}/entities", json=shelter(30))
    url = f"{BASE}/entities/urn:ngsi-ld:EvacuationShelter:030"
    r = client.request(method.upper(), url, json=[{"capacity": {"value": 1}}])
    assert r.status_code == 400, r.text
    assert client.get(url, params={"options": "keyValues"}).json()["capacity"] == 3000

"""What the console is built on: tenantOverview, previewRecommendations and importFile, and the
console's own pages (served with a strict Content-Security-Policy)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import func, select

from storage.models import Impression, Item
from tests.graph_api.conftest import Api, make_settings, running_api

OVERVIEW = """query($days: Int!) { tenantOverview(days: $days) { items users activeUsers
  interactions interactionsPerDay { day interactions } } }"""
PREVIEW = """query($user: UUID!, $options: RecommendationOptions) {
  previewRecommendations(userId: $user, options: $options) {
    recommendationId algorithm items { item { id } } } }"""
RECOMMEND = "{ recommendations(options: {numRecommendations: 4}) { items { item { id } } } }"
IMPORT = """mutation($input: FileImportInput!) { importFile(input: $input) {
  items users interactions ratings duplicates badCount strictRejected badRows { line reason } } }"""
CREATE = "mutation($t: String!) { createItem(input: {title: $t}) { id } }"
RECORD = """mutation($i: UUID!) { recordInteraction(input: {itemId: $i, interactionType: "view"})
  { id } }"""
SEARCH = "query($s: String!) { items(search: $s) { externalId title category } }"


def _code(payload: dict) -> str:
    return payload["errors"][0]["extensions"]["code"]


def _file(kind: str, name: str, text: str | bytes, **extra: Any) -> dict[str, Any]:
    raw = text.encode() if isinstance(text, str) else text
    content = base64.b64encode(raw).decode()
    return {"input": {"kind": kind, "fileName": name, "contentBase64": content, **extra}}


async def _item_count(api: Api) -> int:
    async with api.database.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Item)) or 0)


async def test_the_overview_counts_what_the_tenant_holds(api: Api) -> None:
    admin, _ = await api.register("admin@overview.example", "overview.example")
    items = [(await api.ok(CREATE, {"t": f"Lamp {n}"}, admin))["createItem"] for n in range(3)]
    items = [item["id"] for item in items]
    shopper, _ = await api.register("shopper@overview.example", "overview.example")
    await api.register("idle@overview.example", "overview.example")
    for item in items[:2]:
        await api.ok(RECORD, {"i": item}, shopper)

    overview = (await api.ok(OVERVIEW, {"days": 7}, admin))["tenantOverview"]
    assert (overview["items"], overview["users"]) == (3, 3)
    assert (overview["interactions"], overview["activeUsers"]) == (2, 1)
    days = overview["interactionsPerDay"]
    assert len(days) == 7 and days[-1]["interactions"] == 2  # the newest day ends the range
    assert sum(day["interactions"] for day in days) == 2
    assert days == sorted(days, key=lambda day: day["day"])

    assert _code(await api.gql(OVERVIEW, {"days": 7}, shopper)) == "FORBIDDEN"
    assert _code(await api.gql(OVERVIEW, {"days": 0}, admin)) == "BAD_USER_INPUT"
    assert _code(await api.gql(OVERVIEW, {"days": 7}, None)) == "UNAUTHENTICATED"


async def test_a_preview_is_what_the_user_is_served_and_is_not_an_impression(api: Api) -> None:
    admin, _ = await api.register("admin@preview.example", "preview.example")
    for n in range(6):
        await api.ok(CREATE, {"t": f"Film {n}"}, admin)
    shopper, shopper_id = await api.register("shopper@preview.example", "preview.example")
    served = (await api.ok(RECOMMEND, token=shopper))["recommendations"]["items"]
    await api.app.state.services.feedback.flush()
    async with api.database.session() as session:
        before = await session.scalar(select(func.count()).select_from(Impression))

    options = {"numRecommendations": 4}
    preview = (await api.ok(PREVIEW, {"user": shopper_id, "options": options}, admin))[
        "previewRecommendations"
    ]
    assert [entry["item"]["id"] for entry in preview["items"]] == [
        entry["item"]["id"] for entry in served
    ]
    await api.app.state.services.feedback.flush()
    async with api.database.session() as session:
        after = await session.scalar(select(func.count()).select_from(Impression))
    assert after == before  # a preview is not shown to the user

    other_admin, _ = await api.register("admin@elsewhere.example", "elsewhere.example")
    assert _code(await api.gql(PREVIEW, {"user": shopper_id}, other_admin)) == "NOT_FOUND"
    assert _code(await api.gql(PREVIEW, {"user": shopper_id}, shopper)) == "FORBIDDEN"
    bad = {"user": shopper_id, "options": {"numRecommendations": 0}}
    assert _code(await api.gql(PREVIEW, bad, admin)) == "BAD_USER_INPUT"


ITEMS_CSV = """external_id,title,category,tags
lamp-1,Desk lamp,lighting,desk|metal
lamp-2,,lighting,
lamp-3,Floor lamp,lighting,floor
"""


async def test_a_file_imports_as_the_cli_imports_it_and_bad_rows_are_named(api: Api) -> None:
    admin, _ = await api.register("admin@files.example", "files.example")
    broken = ITEMS_CSV + "lamp-4,Broken lamp,lighting\n"  # one field short
    done = (await api.ok(IMPORT, _file("ITEMS", "lamps.csv", broken), admin))["importFile"]
    assert (done["items"], done["badCount"], done["strictRejected"]) == (3, 1, False)
    assert done["badRows"][0]["line"] == 5 and "expected 4 fields" in done["badRows"][0]["reason"]
    found = (await api.ok(SEARCH, {"s": "lamp"}, admin))["items"]
    assert {item["externalId"] for item in found} == {"lamp-1", "lamp-2", "lamp-3"}

    again = (await api.ok(IMPORT, _file("ITEMS", "lamps.csv", ITEMS_CSV), admin))["importFile"]
    assert again["items"] == 3 and await _item_count(api) == 3  # updated, not doubled

    lines = "external_id,title\nlamp-9,Wall lamp\n,No id\n"
    strict = _file("ITEMS", "more.csv", lines, strict=True)
    refused = (await api.ok(IMPORT, strict, admin))["importFile"]
    assert refused["strictRejected"] and refused["items"] == 0
    assert await _item_count(api) == 3

    events = "user,item,type,time\nu1,lamp-1,view,2026-01-02T10:00:00\nu2,lamp-9,view,2026-01-02\n"
    done = (await api.ok(IMPORT, _file("INTERACTIONS", "events.csv", events), admin))["importFile"]
    assert done["interactions"] == 1 and done["badCount"] == 1  # lamp-9 is no item


async def test_parquet_and_json_lines_files_import_too(api: Api) -> None:
    admin, _ = await api.register("admin@formats.example", "formats.example")
    table = pa.table({"external_id": ["p1", "p2"], "title": ["Chair", "Table"]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    done = await api.ok(IMPORT, _file("ITEMS", "furniture.parquet", buffer.getvalue()), admin)
    assert done["importFile"]["items"] == 2
    lines = '{"sku": "j1", "title": "Sofa"}\n{"sku": "j2", "title": "Bed"}\n'
    mapped = _file("ITEMS", "more.jsonl", lines, mapping=["external_id=sku"])
    assert (await api.ok(IMPORT, mapped, admin))["importFile"]["items"] == 2
    assert await _item_count(api) == 4


async def test_bad_files_are_refused_with_the_field_and_nothing_is_written(api: Api) -> None:
    admin, _ = await api.register("admin@badfiles.example", "badfiles.example")
    shopper, _ = await api.register("shopper@badfiles.example", "badfiles.example")

    def refused(payload: dict, field: str) -> None:
        error = payload["errors"][0]
        assert error["extensions"]["code"] == "BAD_USER_INPUT", error
        assert error["extensions"]["field"] == field, error

    refused(await api.gql(IMPORT, _file("ITEMS", "lamps.xlsx", ITEMS_CSV), admin), "fileName")
    missing_column = _file("ITEMS", "lamps.csv", "title,category\nLamp,lighting\n")
    payload = await api.gql(IMPORT, missing_column, admin)
    refused(payload, "contentBase64")
    assert "lamps.csv" in payload["errors"][0]["message"]  # the client's name, not ours
    not_base64 = _file("ITEMS", "lamps.csv", "")
    not_base64["input"]["contentBase64"] = "%%% not base64 %%%"
    refused(await api.gql(IMPORT, not_base64, admin), "contentBase64")
    refused(await api.gql(IMPORT, _file("ITEMS", "x.csv", ITEMS_CSV, mapping=["nonsense"]), admin),
            "mapping")  # fmt: skip
    assert _code(await api.gql(IMPORT, _file("ITEMS", "lamps.csv", ITEMS_CSV), shopper)) == (
        "FORBIDDEN"
    )
    assert await _item_count(api) == 0


async def test_an_oversized_file_and_a_full_catalogue_write_nothing(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        max_upload_bytes=200,
        tenant_quotas={
            "basic": {"max_items": 2, "recommendations_per_hour": 100, "training_runs_per_day": 5}
        },
    )
    async with running_api(f"sqlite+aiosqlite:///{tmp_path}/api.db", settings) as api:
        admin, _ = await api.register("admin@small.example", "small.example")
        big = "external_id,title\n" + "".join(f"i{n},Item number {n}\n" for n in range(40))
        payload = await api.gql(IMPORT, _file("ITEMS", "big.csv", big), admin)
        error = payload["errors"][0]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert error["extensions"]["field"] == "contentBase64"
        assert error["extensions"]["maxUploadBytes"] == 200
        three = "external_id,title\na,A\nb,B\nc,C\n"
        assert _code(await api.gql(IMPORT, _file("ITEMS", "three.csv", three), admin)) == (
            "QUOTA_EXCEEDED"
        )
        assert await _item_count(api) == 0


async def test_the_console_is_served_with_a_strict_policy(api: Api) -> None:
    bare = await api.client.get("/console")
    assert bare.status_code == 308 and bare.headers["location"] == "console/"
    page = await api.client.get("/console/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy
    assert "<script>" not in page.text and "style=" not in page.text  # nothing inline
    script = await api.client.get("/console/app.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in script.text  # text from the API goes in as text only
    assert (await api.client.get("/console/../app.py")).status_code == 404
    assert (await api.client.get("/console/secret.txt")).status_code == 404

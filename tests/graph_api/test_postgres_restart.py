"""PostgreSQL restarted under traffic: while it is down every operation that needs it fails fast
with UNAVAILABLE (never INTERNAL, never a hang), the pool recovers on its own once it is back,
and no acknowledged write is lost. The test starts a PostgreSQL of its own in a temporary
folder (``initdb``/``pg_ctl``); the machine's shared one is never touched."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.faults import OwnPostgres
from storage.db import migrate
from tests.conftest import missing
from tests.graph_api.conftest import make_settings, running_api

pytestmark = [pytest.mark.services, pytest.mark.slow]

RECORD = """
mutation($item: UUID!) {
  recordInteraction(input: {itemId: $item, interactionType: "view"}) { id }
}"""
COUNT = "{ me { interactions(limit: 100) { id } } }"
# The longest an operation may take while the database is down: connecting fails at once
# (refused), so anything near the 30 s connect timeout would be a hang.
DOWN_ANSWER_S = 10.0


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    if not OwnPostgres.available():
        missing("initdb/pg_ctl not found", "install Debian's postgresql package")
    server = OwnPostgres().init()
    server.start()
    try:
        yield server
    finally:
        server.remove()


async def test_a_restart_answers_unavailable_then_recovers_losing_nothing(
    own_postgres: OwnPostgres, tmp_path: Path
) -> None:
    await migrate(own_postgres.url)
    settings = make_settings(tmp_path, database_url=own_postgres.url)
    async with running_api(own_postgres.url, settings) as api:
        token, _ = await api.register("shopper@restart.example", "restart.example")
        created = await api.ok(
            'mutation { createItem(input: {title: "Lamp"}) { id } }', token=token
        )
        item = created["createItem"]["id"]
        acknowledged = [(await api.ok(RECORD, {"item": item}, token))["recordInteraction"]["id"]]

        own_postgres.stop()
        codes = []
        for _ in range(3):
            started = time.monotonic()
            payload = await api.gql(RECORD, {"item": item}, token)
            took = time.monotonic() - started
            assert took < DOWN_ANSWER_S, f"a request hung on the database for {took:.1f}s"
            codes.append(payload["errors"][0]["extensions"]["code"])
            assert (
                payload["errors"][0]["message"] == "Service temporarily unavailable, retry later."
            )
        assert codes == ["UNAVAILABLE"] * 3

        own_postgres.start()
        deadline = time.monotonic() + 30
        while True:  # the pool's stale connections are found out and replaced by itself
            payload = await api.gql(RECORD, {"item": item}, token)
            if "errors" not in payload:
                acknowledged.append(payload["data"]["recordInteraction"]["id"])
                break
            code = payload["errors"][0]["extensions"]["code"]
            assert code == "UNAVAILABLE", payload
            assert time.monotonic() < deadline, "the pool did not recover"
        acknowledged.append(
            (await api.ok(RECORD, {"item": item}, token))["recordInteraction"]["id"]
        )
        stored = {row["id"] for row in (await api.ok(COUNT, token=token))["me"]["interactions"]}
        assert set(acknowledged) <= stored and len(stored) == len(acknowledged)

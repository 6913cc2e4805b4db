"""``schema.graphql`` is the live schema's SDL: a change to the API shows up in review."""

from __future__ import annotations

from pathlib import Path

from graph_api.schema import printed_sdl

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schema.graphql"


def test_the_checked_in_schema_is_the_live_one() -> None:
    assert SCHEMA_FILE.exists(), "schema.graphql is missing: run `recserve schema` (make schema)"
    live = printed_sdl()
    assert SCHEMA_FILE.read_text() == live, (
        "schema.graphql differs from the live schema: if the change is intended, run "
        "`recserve schema` (or `make schema`) and commit the file"
    )


def test_the_file_shows_the_api_a_client_uses() -> None:
    text = SCHEMA_FILE.read_text()
    for declaration in ("type Query {", "type Mutation {", "type Subscription {"):
        assert declaration in text
    assert "quotas: [QuotaStatus!]!" in text

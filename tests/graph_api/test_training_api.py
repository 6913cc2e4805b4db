"""Training through the API: job records, model versions, promotion and rollback, the job
stream; admins only, their own tenant only, bad input as BAD_USER_INPUT."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from graph_api import training
from graph_api.query_limits import FIELD_COSTS, LIST_SIZES
from storage.artifacts import ArtifactStore
from storage.cache.channels import models_channel
from storage.cache.keys import model_epoch
from storage.models import utcnow
from storage.repositories import jobs as jobs_repo
from tests.graph_api.conftest import Api
from tests.graph_api.ws_client import graphql_socket, live_server

JOB_FIELDS = """jobId status algorithms progress metrics modelVersion error trigger reason
  distributed createdAt startedAt finishedAt durationSeconds"""
JOB = f"query($id: String!) {{ trainingJob(id: $id) {{ {JOB_FIELDS} }} }}"
JOBS = "query($limit: Int!) { trainingJobs(limit: $limit) { jobId status } }"
VERSIONS = """query($a: String) {
  modelVersions(algorithm: $a) { algorithm version current createdAt metrics counts }
}"""
PROMOTE = """mutation($a: String!, $v: String!) {
  promoteModel(algorithm: $a, version: $v) { algorithm version current }
}"""
ROLLBACK = "mutation($a: String!) { rollbackModel(algorithm: $a) { algorithm version current } }"


def _code(payload: dict[str, Any]) -> str:
    return payload["errors"][0]["extensions"]["code"]


async def _admin(api: Api, domain: str) -> tuple[str, uuid.UUID]:
    token, _ = await api.register(f"admin@{domain}", domain)
    async with api.database.session() as session:
        from storage.repositories import get_tenant_by_domain

        tenant = await get_tenant_by_domain(session=session, domain=domain)
    return token, tenant.id


async def _job(api: Api, tenant_id: uuid.UUID, *, finished: bool) -> str:
    """A job as a run records it: claimed, running, one algorithm done, maybe finished."""
    started = utcnow() - timedelta(seconds=30)
    async with api.database.session() as session:
        claim = await jobs_repo.claim_job(
            session=session,
            tenant_id=tenant_id,
            algorithms=["ease", "als"],
            stale_after=timedelta(minutes=10),
            now=started,
        )
        job_id = claim.job.id
        await jobs_repo.mark_running(session=session, job_id=job_id, now=started)
        await jobs_repo.record_progress(
            session=session, job_id=job_id, algorithm="ease", state="succeeded"
        )
        if finished:
            await jobs_repo.finish_job(
                session=session,
                job_id=job_id,
                versions={"ease": "v000002"},
                metrics={"ease": {"ndcg@10": 0.25}},
                skipped={"als": "too few users"},
                now=started + timedelta(seconds=12),
            )
    return job_id.hex


async def test_a_training_job_reads_from_its_record(api: Api) -> None:
    token, tenant = await _admin(api, "jobs.example")
    job_id = await _job(api, tenant, finished=True)
    job = (await api.ok(JOB, {"id": job_id}, token))["trainingJob"]
    assert job["status"] == "succeeded" and job["modelVersion"] == "v000002"
    assert job["progress"] == {
        "ease": {"state": "succeeded"},
        "als": {"state": "skipped", "detail": "too few users"},
    }
    assert job["metrics"] == {"ease": {"ndcg@10": 0.25}}
    assert job["durationSeconds"] == pytest.approx(12.0)
    assert job["trigger"] == "api" and job["error"] is None and job["finishedAt"]
    running = await _job(api, tenant, finished=False)  # another tenant's? no: same, later
    listed = (await api.ok(JOBS, {"limit": 10}, token))["trainingJobs"]
    assert [entry["jobId"] for entry in listed] == [running, job_id]  # newest first
    assert listed[0]["status"] == "running"


async def test_jobs_are_admin_only_and_tenant_scoped(api: Api) -> None:
    token, tenant = await _admin(api, "mine.example")
    user, _ = await api.register("user@mine.example", "mine.example")
    outsider, _ = await _admin(api, "theirs.example")
    job_id = await _job(api, tenant, finished=True)
    assert _code(await api.gql(JOB, {"id": job_id}, user)) == "FORBIDDEN"
    assert _code(await api.gql(JOBS, {"limit": 5}, user)) == "FORBIDDEN"
    assert _code(await api.gql(JOB, {"id": job_id}, outsider)) == "NOT_FOUND"
    assert (await api.ok(JOBS, {"limit": 5}, outsider))["trainingJobs"] == []
    assert _code(await api.gql(JOB, {"id": "nonsense"}, token)) == "NOT_FOUND"
    assert _code(await api.gql(JOB, {"id": "x" * 100}, token)) == "BAD_USER_INPUT"
    assert _code(await api.gql(JOBS, {"limit": 0}, token)) == "BAD_USER_INPUT"


def _publish(store: ArtifactStore, tmp: Path, tenant: str, name: str, ndcg: float) -> str:
    local = tmp / f"{name}-{ndcg}"
    local.mkdir()
    (local / "arrays.npz").write_bytes(b"x")
    version = store.new_version(tenant, name)
    meta = {"created_at": utcnow().isoformat(), "metrics": {"ndcg@10": ndcg}}
    store.save(tenant, name, version, local, meta)
    store.promote(tenant, name, version)
    return version


async def test_model_versions_promote_and_rollback(api: Api, tmp_path: Path) -> None:
    token, tenant = await _admin(api, "models.example")
    store = ArtifactStore(api.settings.artifact_uri)
    first = _publish(store, tmp_path, str(tenant), "ease", 0.2)
    second = _publish(store, tmp_path, str(tenant), "ease", 0.3)
    rows = (await api.ok(VERSIONS, {"a": "ease"}, token))["modelVersions"]
    assert [(r["version"], r["current"], r["metrics"]) for r in rows] == [
        (first, False, {"ndcg@10": 0.2}),
        (second, True, {"ndcg@10": 0.3}),
    ]
    everything = (await api.ok(VERSIONS, {"a": None}, token))["modelVersions"]
    assert {r["algorithm"] for r in everything} == {"ease"}

    epoch = await model_epoch(api.cache, tenant)
    async with await api.cache.subscribe(models_channel(str(tenant))) as announcements:
        promoted = (await api.ok(PROMOTE, {"a": "ease", "v": first}, token))["promoteModel"]
        assert promoted == {"algorithm": "ease", "version": first, "current": True}
        assert store.current(str(tenant), "ease") == first
        _channel, message = await asyncio.wait_for(announcements.__anext__(), 5)
        assert message == {"tenant_id": str(tenant), "versions": {"ease": first}}
    assert await model_epoch(api.cache, tenant) > epoch  # cached results are not served again

    back = (await api.ok(ROLLBACK, {"a": "ease"}, token))["rollbackModel"]
    assert back == {"algorithm": "ease", "version": second, "current": True}
    assert store.current(str(tenant), "ease") == second


async def test_model_administration_refuses_bad_input_and_strangers(
    api: Api, tmp_path: Path
) -> None:
    token, tenant = await _admin(api, "strict.example")
    user, _ = await api.register("user@strict.example", "strict.example")
    outsider, _ = await _admin(api, "other.example")
    store = ArtifactStore(api.settings.artifact_uri)
    version = _publish(store, tmp_path, str(tenant), "ease", 0.2)
    assert _code(await api.gql(PROMOTE, {"a": "ease", "v": version}, user)) == "FORBIDDEN"
    assert _code(await api.gql(ROLLBACK, {"a": "ease"}, user)) == "FORBIDDEN"
    assert _code(await api.gql(VERSIONS, {"a": "ease"}, user)) == "FORBIDDEN"
    assert _code(await api.gql(VERSIONS, {"a": "nope"}, token)) == "BAD_USER_INPUT"
    assert _code(await api.gql(PROMOTE, {"a": "nope", "v": version}, token)) == "BAD_USER_INPUT"
    assert _code(await api.gql(PROMOTE, {"a": "ease", "v": "../x"}, token)) == "BAD_USER_INPUT"
    assert _code(await api.gql(PROMOTE, {"a": "ease", "v": "v999999"}, token)) == "NOT_FOUND"
    assert _code(await api.gql(ROLLBACK, {"a": "ease"}, token)) == "NOT_FOUND"  # no earlier
    # Another tenant's admin sees none of it, and cannot promote it for its own tenant.
    assert (await api.ok(VERSIONS, {"a": "ease"}, outsider))["modelVersions"] == []
    assert _code(await api.gql(PROMOTE, {"a": "ease", "v": version}, outsider)) == "NOT_FOUND"
    assert store.current(str(tenant), "ease") == version


def test_training_fields_are_priced() -> None:
    assert FIELD_COSTS["promoteModel"] == FIELD_COSTS["rollbackModel"] == 5
    assert FIELD_COSTS["modelVersions"] == 2
    assert LIST_SIZES["trainingJobs"] == (("limit",), 20)


UPDATES = f"subscription($id: String!) {{ trainingJobUpdates(id: $id) {{ {JOB_FIELDS} }} }}"


async def test_job_updates_stream_until_the_job_ends(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training, "JOB_POLL_SECONDS", 0.05)
    token, tenant = await _admin(api, "stream.example")
    user, _ = await api.register("user@stream.example", "stream.example")
    job_id = await _job(api, tenant, finished=False)
    async with live_server(api.app) as address:
        url = f"ws://{address}/graphql"
        async with graphql_socket(url, token) as ws:
            await ws.subscribe(UPDATES, {"id": job_id})
            first = (await ws.next_data())["trainingJobUpdates"]
            assert first["status"] == "running" and first["progress"]["ease"] == {
                "state": "succeeded"
            }
            async with api.database.session() as session:
                await jobs_repo.record_progress(
                    session=session, job_id=uuid.UUID(job_id), algorithm="als", state="running"
                )
            moved = (await ws.next_data())["trainingJobUpdates"]
            assert moved["progress"]["als"] == {"state": "running"}
            async with api.database.session() as session:
                await jobs_repo.fail_job(
                    session=session, job_id=uuid.UUID(job_id), error="out of memory"
                )
            last = (await ws.next_data())["trainingJobUpdates"]
            assert last["status"] == "failed" and last["error"] == "out of memory"
            assert (await ws.receive())["type"] == "complete"  # the stream ends with the job
        async with graphql_socket(url, user) as ws:
            await ws.subscribe(UPDATES, {"id": job_id})
            refused = await ws.receive()
            assert refused["payload"]["errors"][0]["extensions"]["code"] == "FORBIDDEN"

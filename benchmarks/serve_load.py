"""The serving benchmark's two halves: a trained tenant to serve, and the load that measures it.

The load goes through ``LeanClient`` by default: HTTP/1.1 with one kept-alive connection per
concurrent client and the request bytes written directly, as wrk-style load generators do.
httpx, the alternative (``client="httpx"``), spends about a millisecond of Python per request
on its own side, as much as the server spends on a cached answer; on a 2-core machine that
time is both in each latency and taken from the server's CPU.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import httpx
import numpy as np
import orjson
from sqlalchemy import select

from cluster import operations as ops
from graph_api.auth import Principal, TokenService
from ingest.writer import ingest_dataset
from storage.models import User
from storage.settings import Settings
from training.datasets import generate_catalogue
from training.pipeline import train_tenant_async

if TYPE_CHECKING:
    from benchmarks.profiling import Profiler

DOMAIN = "bench-serve.example"
USERS, ITEMS, CLUSTERS, PER_USER = 500, 400, 8, 25
WARMUP_REQUESTS = 24
PHASE_TIMEOUT_S = 180.0
REQUEST_TIMEOUT_S = 60.0
QUERY = """
query($k: Int!, $algorithm: String!) {
  recommendations(options: {numRecommendations: $k, algorithm: $algorithm}) {
    responseTimeMs items { score item { id title } }
  }
}"""
IDLE_SECONDS = 4
IDLE = "idle_cpu_ms_per_s"
CACHED_USERS = 16  # a cached phase cycles over this many users' already-answered lists


async def prepare_tenant(
    data_dir: Path, engines: list[str], movielens: Path | None = None, domain: str = DOMAIN
) -> list[str]:
    """Ingest and train a tenant under ``data_dir`` (the generated catalogue, or the ML-100K
    folder ``movielens``); one access token per user."""
    settings = Settings(data_dir=data_dir)
    database = await ops.open_database(settings)
    try:
        # Enterprise: the rate limit must not be what the benchmark measures.
        tenant, _ = await ops.ensure_tenant(database, domain=domain, tier="enterprise")
        if movielens is None:
            catalogue = generate_catalogue(USERS, ITEMS, CLUSTERS, PER_USER, seed=42)
            await ingest_dataset(
                database, tenant.id, items=catalogue.items, interactions=catalogue.interactions
            )
    finally:
        await database.dispose()
    if movielens is not None:
        await ops.ingest_movielens(settings, source=str(movielens), domain=domain)
    database = await ops.open_database(settings)
    try:
        async with database.session() as session:
            rows = await session.execute(select(User.id).where(User.tenant_id == tenant.id))
            user_ids = sorted(rows.scalars())
    finally:
        await database.dispose()
    await train_tenant_async(settings, str(tenant.id), engines)
    tokens = TokenService(settings)
    return [
        tokens.issue(Principal(tenant.id, user_id, "user", "enterprise"), "access")
        for user_id in user_ids
    ]


async def wait_ready(
    client: httpx.AsyncClient, timeout_s: float, process: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode}")
        try:
            if (await client.get("/health/ready")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.5)
    raise TimeoutError(f"server not ready in {timeout_s:.0f}s")


class Load:
    """Hands out requests for ``algorithm``: distinct (user, k) pairs, so the response cache key
    never repeats in a run, or (``cached``) the same few users' lists over and over."""

    def __init__(self, tokens: list[str], algorithm: str = "hybrid", cached: bool = False) -> None:
        self.tokens = tokens[:CACHED_USERS] if cached else tokens
        self.algorithm, self.cached = algorithm, cached
        self.issued = 0

    def next(self) -> tuple[str, int, str]:
        index = self.issued
        self.issued += 1
        token = self.tokens[index % len(self.tokens)]
        k = 10 if self.cached else 5 + (index // len(self.tokens)) % 40
        return token, k, self.algorithm


class Poster(Protocol):
    async def post(self, path: str, body: bytes, token: str) -> tuple[int, bytes]: ...


class LeanClient:
    """POSTs over kept-alive HTTP/1.1 connections, one per request in flight."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: bytes, token: str) -> tuple[int, bytes]:
        while self._idle:
            reader, writer = self._idle.pop()
            if reader.at_eof():  # the server closed it while idle (keep-alive timeout)
                writer.close()
                continue
            try:
                return await self._exchange(reader, writer, path, body, token)
            except (ConnectionError, asyncio.IncompleteReadError):
                continue  # closed as we sent: as httpx does, once more on a new connection
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return await self._exchange(reader, writer, path, body, token)

    async def _exchange(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        path: str,
        body: bytes,
        token: str,
    ) -> tuple[int, bytes]:
        try:
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            status, headers = _head(await reader.readuntil(b"\r\n\r\n"))
            if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                payload = await _chunked(reader)
            else:
                payload = await reader.readexactly(int(headers.get(b"content-length", b"0")))
        except BaseException:
            writer.close()
            raise
        if headers.get(b"connection", b"").lower() == b"close":
            writer.close()
        else:
            self._idle.append((reader, writer))
        return status, payload

    async def aclose(self) -> None:
        for _reader, writer in self._idle:
            writer.close()
        self._idle.clear()


def _head(raw: bytes) -> tuple[int, dict[bytes, bytes]]:
    lines = raw.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name:
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
    await reader.readuntil(b"\r\n")  # the empty trailer
    return b"".join(chunks)


class HttpxPoster:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def post(self, path: str, body: bytes, token: str) -> tuple[int, bytes]:
        response = await self.client.post(
            path,
            content=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        return response.status_code, response.content


async def _one(client: Poster, token: str, k: int, algorithm: str) -> tuple[float, bool]:
    body = orjson.dumps({"query": QUERY, "variables": {"k": k, "algorithm": algorithm}})
    started = time.perf_counter()
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            status, payload = await client.post("/graphql", body, token)
        answer = orjson.loads(payload)
        ok = status == 200 and not answer.get("errors")
        ok = ok and bool(answer["data"]["recommendations"]["items"])
    except (httpx.HTTPError, OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
        ok = False
    return (time.perf_counter() - started) * 1000.0, ok


async def run_phase(client: Poster, load: Load, clients: int, requests: int) -> dict:
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    budget = {"left": requests}

    async def worker() -> None:
        nonlocal errors
        while budget["left"] > 0 and time.monotonic() < deadline:
            budget["left"] -= 1
            elapsed, ok = await _one(client, *load.next())
            latencies.append(elapsed)
            errors += not ok

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - started
    values = np.asarray(latencies)
    return {
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "rps": len(latencies) / wall,
    }


async def measure(
    base_url: str,
    tokens: list[str],
    clients: list[int],
    requests: int,
    ready_timeout_s: float,
    process: subprocess.Popen[bytes],
    algorithms: tuple[str, ...] = ("hybrid",),
    cached: tuple[bool, ...] = (False,),
    profiler: Profiler | None = None,
    profile_phase: str | None = None,
    client_kind: str = "lean",
) -> dict[str, Any]:
    """``{"{algorithm}/{cached|uncached}/{clients}": phase}``; models load before measuring."""
    limits = httpx.Limits(max_connections=max(clients) + 2)
    results: dict[str, Any] = {}
    lean = LeanClient(base_url)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as http:
        await wait_ready(http, ready_timeout_s, process)
        client: Poster = lean if client_kind == "lean" else HttpxPoster(http)
        # what the server burns with no request at all (metrics, health checks, controllers)
        before = process_cpu(process.pid)
        await asyncio.sleep(IDLE_SECONDS)
        results[IDLE] = cpu_per_request(before, process_cpu(process.pid), int(IDLE_SECONDS))
        for algorithm in algorithms:
            uncached = Load(tokens, algorithm)
            # First requests load the models into the replicas (or the process): not measured.
            await run_phase(client, uncached, 4, WARMUP_REQUESTS)
            for is_cached in cached:
                load = Load(tokens, algorithm, cached=True) if is_cached else uncached
                if is_cached:  # every list the phase asks for is answered once first
                    await run_phase(client, load, 1, len(load.tokens))
                name = "cached" if is_cached else "uncached"
                for c in clients:
                    key = f"{algorithm}/{name}/{c}"
                    before = process_cpu(process.pid)
                    if profiler is not None and key == profile_phase:
                        profiler.start()
                        results[key] = await run_phase(client, load, c, requests)
                        results[key]["profile"] = profiler.stop(
                            results[key]["requests"]
                        ).per_process
                    else:
                        results[key] = await run_phase(client, load, c, requests)
                    results[key]["cpu_ms"] = cpu_per_request(
                        before, process_cpu(process.pid), results[key]["requests"]
                    )
    await lean.aclose()
    return results


def process_tree(root_pid: int) -> list[tuple[int, str]]:
    """``(pid, name)`` of ``root_pid`` and its descendants; Ray replicas are named by their
    deployment (``ray::ServeReplica:{app}:{deployment}`` becomes ``{app}:{deployment}``)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found: list[tuple[int, str]] = []
    pending = [root_pid]
    while pending:
        pid = pending.pop()
        pending.extend(children.get(pid, ()))
        try:
            title = (Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]).decode()
        except (OSError, IndexError, ValueError):
            continue
        if title:
            name = (
                title.split("ServeReplica:")[-1] if "ServeReplica:" in title else Path(title).name
            )
            found.append((pid, name))
    return found


def process_cpu(root_pid: int) -> dict[int, tuple[str, float]]:
    """pid -> (name, CPU seconds so far: user + system, every thread) of ``root_pid`` and its
    descendants; Linux only. Native threads count too (Ray's core worker, gRPC, HAProxy),
    which a Python sampler does not see."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[str, float]] = {}
    for pid, name in process_tree(root_pid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        found[pid] = (_replica_name(name), (int(fields[11]) + int(fields[12])) / tick)
    return found


def _replica_name(name: str) -> str:
    # Ray retitles an actor's process with the method it runs ("...:engine_ease.check_health")
    head, dot, method = name.rpartition(".")
    return head if dot and ":" in head and method.isidentifier() else name


def cpu_per_request(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], requests: int
) -> dict[str, float]:
    """CPU milliseconds per request each process (by name) spent between two readings; a
    process that started in between counts from its start."""
    spent: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        used = seconds - before.get(pid, (name, 0.0))[1]
        if used > 0:
            spent[name] = spent.get(name, 0.0) + used * 1000.0 / max(requests, 1)
    return spent


def process_rss(root_pid: int) -> dict[str, float]:
    """MiB of resident memory of ``root_pid`` and its descendants, by process name; Linux only."""
    rss: dict[str, float] = {}
    for pid, name in process_tree(root_pid):
        try:
            pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        rss[name] = rss.get(name, 0.0) + pages * 4096 / 2**20
    return rss

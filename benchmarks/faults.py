"""Backend faults under traffic: what clients get while Redis or PostgreSQL is down and after.

For each fault the GraphQL app (``create_app``, uvicorn on a local port, the production
middleware and resolvers) runs on backends this benchmark starts itself in temporary folders:
a PostgreSQL (``initdb``/``pg_ctl``, as the ``postgres`` user when run as root) and a
``redis-server`` (for ``redis-cluster``: three masters with a replica each, one master killed
for good). Clients with their own tokens send a mix of ``recommendations`` and
``recordInteraction`` over HTTP; a few seconds in, the backend is killed, then started again.
Prints, per fault: requests sent, failed (and their codes), answered while the backend was
down, seconds from the restart to the first answer that needed it, and acknowledged writes
lost (ids returned to a client but missing from the database at the end).

    python -m benchmarks.faults [--clients 4] [--seconds 12]
        [--faults redis,redis-cluster,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

RECORD = """
mutation($item: UUID!) {
  recordInteraction(input: {itemId: $item, interactionType: "view"}) { id }
}"""
RECOMMEND = "{ recommendations(options: {numRecommendations: 5}) { totalCount } }"
CLUSTER = "redis-cluster"  # a master of a Redis Cluster with replicas dies


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _postgres_binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class OwnPostgres:
    """A throwaway PostgreSQL cluster (initdb refuses root: run as ``postgres`` then)."""

    def __init__(self, binaries: Path | None = None) -> None:
        found = binaries or _postgres_binaries()
        if found is None:
            raise RuntimeError("needs PostgreSQL's initdb and pg_ctl")
        self.binaries = found
        self.folder = Path(tempfile.mkdtemp(prefix="recserve-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.folder, "postgres")

    @staticmethod
    def available() -> bool:
        return _postgres_binaries() is not None

    def _run(self, *command: str) -> None:
        subprocess.run([*self._as, *command], check=True, capture_output=True, timeout=120)

    def init(self) -> OwnPostgres:
        self._run(
            str(self.binaries / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "-E", "UTF8",
        )  # fmt: skip
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.binaries / "pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.folder / "log"), "-w", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run(str(self.binaries / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        subprocess.run(
            [*self._as, str(self.binaries / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
             "stop"], capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(self.folder, ignore_errors=True)


class OwnRedis:
    """A throwaway ``redis-server`` on a port of its own, killed and started again on it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="recserve-redis-"))
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def start(self) -> None:
        self._process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._process.poll() is None:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster bus port (the port + 10000) is free too."""
    ports: list[int] = []
    candidate = 20000 + os.getpid() % 20000
    while len(ports) < count:
        candidate = 20000 + (candidate + 7) % 30000
        if all(_free(port) for port in (candidate, candidate + 10000)):
            ports.append(candidate)
    return ports


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class OwnRedisCluster:
    """A throwaway Redis Cluster: three masters, a replica each, failover after
    ``node_timeout_ms`` of a master's silence."""

    def __init__(self, node_timeout_ms: int = 1000) -> None:
        self.node_timeout_ms = node_timeout_ms
        self.ports = _cluster_ports(6)
        self.folder = Path(tempfile.mkdtemp(prefix="recserve-cluster-"))
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:3])
        self._processes: dict[int, subprocess.Popen[bytes]] = {}

    def _cli(self, port: int, *command: str) -> str:
        done = subprocess.run(
            ["redis-cli", "-p", str(port), *command], capture_output=True, text=True, timeout=30
        )
        return done.stdout

    def start(self) -> OwnRedisCluster:
        for port in self.ports:
            folder = self.folder / str(port)
            folder.mkdir()
            self._processes[port] = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-config-file", str(folder / "nodes.conf"),
                 "--cluster-node-timeout", str(self.node_timeout_ms), "--dir", str(folder),
                 "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        for port in self.ports:
            self._wait(lambda port=port: "PONG" in self._cli(port, "ping"), "a node to start")
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, timeout=60, check=True,
        )  # fmt: skip
        self._wait(self.healthy, "the cluster to form")
        self._wait(lambda: len(self.replicas()) == 3, "the replicas to attach")
        return self

    def _wait(self, ready: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def _alive(self) -> list[int]:
        return [port for port, process in self._processes.items() if process.poll() is None]

    def healthy(self) -> bool:
        alive = self._alive()
        return bool(alive) and "cluster_state:ok" in self._cli(alive[0], "cluster", "info")

    def _nodes(self) -> list[list[str]]:
        alive = self._alive()
        return [line.split() for line in self._cli(alive[0], "cluster", "nodes").splitlines()]

    def replicas(self) -> list[int]:
        return [
            int(node[1].split(":")[1].split("@")[0])
            for node in self._nodes()
            if "slave" in node[2] and "fail" not in node[2]
        ]

    def master_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot."""
        slot = int(self._cli(self._alive()[0], "cluster", "keyslot", key).strip())
        for node in self._nodes():
            if "master" not in node[2] or "fail" in node[2]:
                continue
            for ranges in node[8:]:
                low, _, high = ranges.partition("-")
                if int(low) <= slot <= int(high or low):
                    return int(node[1].split(":")[1].split("@")[0])
        raise RuntimeError(f"no master serves slot {slot}")

    def replicated(self, master: int) -> bool:
        """Whether ``master``'s replica has everything the master acknowledged."""
        info = self._cli(master, "info", "replication")
        offsets = [line for line in info.splitlines() if line.startswith("slave0:")]
        own = [line for line in info.splitlines() if line.startswith("master_repl_offset:")]
        if not offsets or not own:
            return False
        fields = dict(part.split("=") for part in offsets[0].split(":", 1)[1].split(","))
        return fields.get("offset") == own[0].split(":")[1].strip()

    def kill(self, port: int) -> None:
        self._processes[port].kill()
        self._processes[port].wait()

    def wait_failover(self, master: int, timeout_s: float = 60) -> None:
        """Until ``master``'s slots are served again (its replica promoted) and the cluster
        reports ``cluster_state:ok``."""

        def promoted() -> bool:
            nodes = self._nodes()
            serving = [n for n in nodes if "master" in n[2] and "fail" not in n[2] and n[8:]]
            gone = f"127.0.0.1:{master}@"
            return (
                len(serving) == 3
                and not any(n[1].startswith(gone) for n in serving)
                and self.healthy()
            )

        self._wait(promoted, f"the failover of {master}", timeout_s)

    def remove(self) -> None:
        for process in self._processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class Outcome:
    fault: str
    sent: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    messages: dict[str, str] = field(default_factory=dict)  # code -> the first message
    answered_while_down: int = 0  # degraded: answered without the backend
    outage_s: float | None = None  # the backend's time away (a cluster: until failed over)
    recovery_s: float | None = None
    acknowledged: list[tuple[str, str]] = field(default_factory=list)  # (token, id)
    lost: int = 0

    @property
    def failed(self) -> int:
        return sum(self.codes.values())


async def _serve(app: Any, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn has no event for it
        await asyncio.sleep(0.05)
    return server, task


async def _post(client: httpx.AsyncClient, query: str, variables: dict, token: str) -> dict:
    response = await client.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
    )
    return response.json()


async def run_fault(
    fault: str, clients: int, seconds: float, down_at: float, up_at: float
) -> Outcome:
    """One fault: the app on its own PostgreSQL and Redis, ``fault`` killed at ``down_at`` s
    and started again at ``up_at`` s while ``clients`` clients send requests."""
    from cluster import operations as ops
    from graph_api.app import create_app
    from recommend.inprocess import InProcessService
    from storage.cache import create_cache
    from storage.db import Database, migrate
    from storage.settings import Settings

    postgres = OwnPostgres().init()
    redis: OwnRedis | OwnRedisCluster = OwnRedisCluster() if fault == CLUSTER else OwnRedis()
    postgres.start()
    redis.start()
    tmp = Path(tempfile.mkdtemp(prefix="recserve-faults-"))
    outcome = Outcome(fault)
    try:
        await migrate(postgres.url)
        settings = Settings(
            env="test",
            data_dir=tmp,
            database_url=postgres.url,
            redis_url=redis.url,
            jwt_secret="faults-benchmark-secret-0123456789abcdef",
            scheduler_enabled=False,
            # the clients ask as fast as the app answers: limits would answer instead
            rate_limit_tiers={"basic": {"per_user": 1_000_000, "per_tenant": 10_000_000}},
        )
        database, cache = Database(postgres.url), create_cache(settings)
        service = InProcessService(settings, ["popularity"], database=database, cache=cache)
        app = create_app(recommender=service, settings=settings, database=database, cache=cache)
        port = free_port()
        async with app.router.lifespan_context(app):
            server, task = await _serve(app, port)
            try:
                await _drive(ops, settings, database, port, clients, seconds, down_at, up_at,
                             outcome, postgres if fault == "postgres" else redis)  # fmt: skip
            finally:
                server.should_exit = True
                await task
        await cache.close()
        await database.dispose()
    finally:
        redis.remove()
        postgres.remove()
        shutil.rmtree(tmp, ignore_errors=True)
    return outcome


async def _drive(
    ops: Any,
    settings: Any,
    database: Any,
    port: int,
    clients: int,
    seconds: float,
    down_at: float,
    up_at: float,
    outcome: Outcome,
    backend: OwnPostgres | OwnRedis | OwnRedisCluster,
) -> None:
    domain = "faults.example"
    await ops.ensure_tenant(database, domain=domain, registration="closed")
    tokens = [
        (
            await ops.issue_token_in(database, settings, domain=domain, email=f"c{n}@f.example")
        ).access_token
        for n in range(clients)
    ]
    admin = (
        await ops.issue_token_in(database, settings, domain=domain, email="a@f.example", admin=True)
    ).access_token
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        made = await _post(
            client, 'mutation { createItem(input: {title: "Lamp"}) { id } }', {}, admin
        )
        item = made["data"]["createItem"]["id"]
        started = time.monotonic()
        state = {"down": False, "restarted": None}

        async def chaos() -> None:
            await asyncio.sleep(down_at)
            if isinstance(backend, OwnRedisCluster):
                # A master dies for good: its replica takes over once the node timeout has
                # passed; the backend is back when the cluster says so again.
                killed = time.monotonic()
                await asyncio.to_thread(backend.kill, backend.ports[0])
                state["down"] = True
                await asyncio.to_thread(backend.wait_failover, backend.ports[0])
                outcome.outage_s = time.monotonic() - killed
                state["down"], state["restarted"] = False, time.monotonic()
                return
            await asyncio.to_thread(backend.stop)
            state["down"] = True
            await asyncio.sleep(up_at - down_at)
            await asyncio.to_thread(backend.start)
            outcome.outage_s = up_at - down_at
            state["down"], state["restarted"] = False, time.monotonic()

        async def one_client(token: str) -> None:
            turn = 0
            while time.monotonic() - started < seconds:
                turn += 1
                write = turn % 2 == 0
                query, variables = (RECORD, {"item": item}) if write else (RECOMMEND, {})
                was_down = state["down"]
                payload = await _post(client, query, variables, token)
                outcome.sent += 1
                errors = payload.get("errors")
                if errors:
                    code = errors[0].get("extensions", {}).get("code", "?")
                    outcome.codes[code] += 1
                    outcome.messages.setdefault(code, errors[0].get("message", ""))
                else:
                    if was_down:
                        outcome.answered_while_down += 1
                    if write:
                        outcome.acknowledged.append(
                            (token, payload["data"]["recordInteraction"]["id"])
                        )
                    restarted = state["restarted"]
                    if restarted is not None and outcome.recovery_s is None and not was_down:
                        outcome.recovery_s = time.monotonic() - restarted
                await asyncio.sleep(0.01)

        await asyncio.gather(chaos(), *(one_client(token) for token in tokens))
        stored = await _stored_ids(database)
        outcome.lost = sum(1 for _, written in outcome.acknowledged if written not in stored)


async def _stored_ids(database: Any) -> set[str]:
    """Every interaction id in the database (the benchmark's tenant is its only one)."""
    from sqlalchemy import text

    async with database.session() as session:
        return {str(row) for row in (await session.scalars(text("SELECT id FROM interactions")))}


def print_table(outcomes: list[Outcome]) -> None:
    header = f"{'fault':<15}{'sent':>7}{'failed':>8}{'degraded':>10}{'down s':>8}"
    header += f"{'recovery s':>12}{'acked writes':>14}{'lost':>6}  failure codes"
    print(header)
    print("-" * len(header))
    for o in outcomes:
        recovery = f"{o.recovery_s:.2f}" if o.recovery_s is not None else "-"
        down = f"{o.outage_s:.2f}" if o.outage_s is not None else "-"
        codes = ", ".join(f"{code} {n}" for code, n in o.codes.most_common()) or "-"
        print(
            f"{o.fault:<15}{o.sent:>7}{o.failed:>8}{o.answered_while_down:>10}{down:>8}"
            f"{recovery:>12}{len(o.acknowledged):>14}{o.lost:>6}  {codes}"
        )
    for o in outcomes:
        for code, message in o.messages.items():
            print(f"{o.fault} {code}: {message[:160]}")
    print("degraded: answered while the backend was down; down s: the backend's time away (a")
    print("cluster: from the master's death until its replica serves its slots); recovery s:")
    print("from the backend's return to the first answer that needed it")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--faults", default=f"redis,{CLUSTER},postgres")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not (OwnPostgres.available() and OwnRedis.available()):
        raise SystemExit("needs PostgreSQL's initdb/pg_ctl and redis-server")
    outcomes = []
    for fault in args.faults.split(","):
        down_at, up_at = args.seconds / 4, args.seconds / 2
        outcomes.append(asyncio.run(run_fault(fault, args.clients, args.seconds, down_at, up_at)))
    print(f"{args.clients} clients, {args.seconds:g} s each; the backend down from "
          f"{args.seconds / 4:g} s to {args.seconds / 2:g} s")  # fmt: skip
    print_table(outcomes)
    if args.json is not None:
        rows = [
            {"fault": o.fault, "sent": o.sent, "failed": o.failed, "codes": dict(o.codes),
             "degraded": o.answered_while_down, "outage_s": o.outage_s,
             "recovery_s": o.recovery_s,
             "acknowledged_writes": len(o.acknowledged), "lost": o.lost}
            for o in outcomes
        ]  # fmt: skip
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

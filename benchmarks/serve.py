"""Serving latency: the GraphQL API in one process versus the Ray Serve application.

Tenants are ingested and trained once into a temporary data dir: the generated demo tenant
(500 users x 400 items) and, with ``--data``, ML-100K. Each variant then serves those same
promoted models from a fresh child process, configured as ``serve_config.yaml`` configures Serve:

- ``single``: uvicorn running ``create_app`` over ``recommend.inprocess.InProcessService``;
- ``serve``: the full Serve app (GraphQL ingress, combiner, engines) on a fresh local Ray;
- ``serve-tput``: the same with ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` (set before Ray starts);
- ``serve-tput-redis``, ``serve-haproxy-redis``: with a local ``redis-server`` the replicas
  share, as ``recserve serve`` runs when no ``RECSERVE_REDIS_URL`` is configured;
- ``serve-haproxy``: also ``RAY_SERVE_ENABLE_HA_PROXY=1`` (needs ``haproxy``; opt-in, because
  Ray then binds replica ports on every interface, not only 127.0.0.1);
- ``handrolled``: the reference, what a team would hand-roll instead of the product: FastAPI +
  uvicorn, one process, implicit's ALS fitted at startup, no auth, no cache
  (``benchmarks/handrolled.py``; its ``ease`` phases are answered by the same ALS);
- ``recserve``: the app as a user starts it, ``recserve serve --port N`` (the CLI: its own local
  Ray, the local ``redis-server`` it starts without ``RECSERVE_REDIS_URL``, ``serve_config.yaml``
  as it is, so all of its engines and replicas), in its default mode; stopped by SIGTERM, as a
  supervisor stops it, and checked for processes left behind (``benchmarks.soak.stop_app``).

Clients post ``recommendations`` queries for the hybrid and for one engine (EASE): uncached
(each (user, k) pair once per variant, so the response cache never answers) and cached (the same
16 users' lists again and again). Prints one table (p50, p99, requests/s per client count, with
the variant / single-process and variant / handrolled ratios), the resident memory of each
process (every Serve replica by name), and the proportional memory (PSS: shared pages divided
among the processes sharing them, so the sum is what the server costs the machine) summed per
role over the server's whole process tree: each Serve deployment, "ray" for Ray's own processes
(GCS, raylet, dashboard, agents, controller, proxy, idle workers), "redis-server", the driver;
and writes the JSON. Each phase also reports the server's CPU milliseconds per request
(every process of the server, native threads included, from /proc), listed by process for the
uncached hybrid phase at 8 clients: what each Serve hop costs, independent of how busy the
machine is.

    python -m benchmarks.serve --json bench-serve.json [--data ../shared/data/ml-100k]
        [--requests 200] [--clients 1,8] [--variants single,serve,serve-tput,handrolled,recserve]
        [--profile DIR [--profile-phase hybrid/uncached/8]] [--client lean|httpx]

``--profile`` records every serving process with py-spy during one phase and prints, per
process, the CPU milliseconds each request spends in each layer (``benchmarks/profiling.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.profiling import Profile, Profiler
from benchmarks.serve_load import IDLE, _replica_name, measure, prepare_tenant, process_tree
from cluster.local_redis import LocalRedis

ENGINES = ["popularity", "item_knn", "ease", "als", "content"]
FRONT_REPLICAS = "BENCH_SERVE_FRONT_REPLICAS"
INGRESS_REPLICAS = "BENCH_SERVE_INGRESS_REPLICAS"
ARGS = "BENCH_SERVE_ARGS"  # JSON: fields of AppArgs a variant changes
LOCAL_REDIS = "BENCH_SERVE_LOCAL_REDIS"  # the variant's replicas share a local redis-server
# how a variant's server is started: a --child role of this module, or the recserve CLI
CHILD = "BENCH_SERVE_CHILD"
REFERENCE = "handrolled"  # the latency table's second reference, besides "single"
ALGORITHMS = ("hybrid", "ease")
ROOT = Path(__file__).resolve().parents[1]
SERVE_CONFIG = ROOT / "serve_config.yaml"
VARIANT_ENV: dict[str, dict[str, str]] = {
    "single": {},
    "single-full-graphql": {CHILD: "single", "RECSERVE_GRAPHQL_FAST_PATH": "false"},
    # FastAPI + uvicorn + implicit's ALS, no auth, no cache (benchmarks/handrolled.py)
    "handrolled": {CHILD: "handrolled"},
    # `recserve serve --port N` as a user runs it (its own defaults: throughput mode, local Redis)
    "recserve": {CHILD: "recserve"},
    # the same, each without one of its defaults: GraphQL's executor for every request (no
    # graph_api.fast_path), Ray's Python proxy instead of HAProxy
    "recserve-full-graphql": {CHILD: "recserve", "RECSERVE_GRAPHQL_FAST_PATH": "false"},
    "recserve-python-proxy": {CHILD: "recserve", "RAY_SERVE_ENABLE_HA_PROXY": "0"},
    "serve": {},
    "serve-tput": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
    # what `recserve serve` runs without RECSERVE_REDIS_URL: a local Redis the replicas share
    "serve-tput-redis": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", LOCAL_REDIS: "1"},
    # throughput mode, but Ray's proxy calls the ingress as a deployment (no direct ingress)
    "serve-tput-proxied": {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
    },
    "serve-haproxy": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"},
    "serve-haproxy-redis": {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        LOCAL_REDIS: "1",
    },
    # two replicas of the ingress and of the combiner (the two Python hops every request takes)
    "serve-tput-2x": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", FRONT_REPLICAS: "2"},
    # Serve's background work less often: cached request metrics exported every second (not
    # 0.1 s) and the controller's loop every 0.5 s (not 0.1 s)
    "serve-haproxy-quiet": {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000",
        "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
    },
    # the combiner asks the similarity engine's replica for MMR's similarity (no near models)
    "serve-haproxy-remote-sim": {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        ARGS: '{"near_model_mb": 0}',
    },
    # two replicas of the ingress, the busiest process (HAProxy spreads clients over them)
    "serve-haproxy-2in": {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        INGRESS_REPLICAS: "2",
    },
    "serve-haproxy-2x": {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        FRONT_REPLICAS: "2",
    },
}
# the phase whose CPU per request is listed process by process
CPU_PHASE = "hybrid/uncached/8"
DEFAULT_VARIANTS = "single,serve,serve-tput,serve-tput-2x"
READY_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 60.0
MAX_CHILD_LIFETIME_S = 3600.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_single(port: int) -> None:
    import uvicorn

    from graph_api.app import create_app
    from recommend.inprocess import InProcessService
    from storage.settings import Settings

    args = serve_args()
    settings = Settings()
    recommender = InProcessService(settings, args.engines, options=args)
    app = create_app(recommender=recommender, settings=settings)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _run_handrolled(port: int) -> None:
    # The service in a fresh interpreter (same pid): what this module imports for the other
    # roles (ingest, training, the product's API: ~110 MiB) is not the reference's to carry.
    os.execv(sys.executable, [sys.executable, "-m", "benchmarks.handrolled", "--port", str(port)])


def serve_args() -> Any:
    """``serve_config.yaml``'s app args, with the engines this benchmark trains."""
    from deployments.app import AppArgs

    application = yaml.safe_load(SERVE_CONFIG.read_text())["applications"][0]
    args = AppArgs.model_validate(application["args"])
    sizes = dict(args.sizes)
    # The replicas the config starts with (an autoscaled deployment's minimum: this load never
    # scales one up within a phase).
    for deployment in application.get("deployments", []):
        name = deployment["name"]
        count = deployment.get("num_replicas")
        count = (deployment.get("autoscaling_config") or {}).get("min_replicas", count)
        if name in sizes and isinstance(count, int):
            sizes[name] = sizes[name].model_copy(update={"num_replicas": count})
    if replicas := int(os.environ.get(FRONT_REPLICAS, "0")):
        for name in ("ingress", "combiner"):
            sizes[name] = sizes[name].model_copy(update={"num_replicas": replicas})
    if replicas := int(os.environ.get(INGRESS_REPLICAS, "0")):
        sizes["ingress"] = sizes["ingress"].model_copy(update={"num_replicas": replicas})
    changed = json.loads(os.environ.get(ARGS, "{}"))
    return args.model_copy(update={**changed, "engines": ENGINES, "sizes": sizes})


def _exit(*_: object) -> None:
    raise SystemExit(0)


def _run_serve(port: int) -> None:
    import ray
    from ray import serve

    from deployments.app import compose

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    # After ray.init, which installs its own handler: SIGTERM must unwind through the finally
    # below, so the Ray processes this driver started stop with it.
    signal.signal(signal.SIGTERM, _exit)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(compose(serve_args()), name="bench", route_prefix="/")
        print("serving", flush=True)
        deadline = time.monotonic() + MAX_CHILD_LIFETIME_S
        while time.monotonic() < deadline:  # the parent stops us long before
            time.sleep(1.0)
    finally:
        serve.shutdown()
        ray.shutdown()


def _start(
    variant: str, port: int, env: dict[str, str], log: Path | None = None
) -> subprocess.Popen[bytes]:
    child_env = {**env, **VARIANT_ENV[variant]}
    role = child_env.pop(CHILD, "single" if variant == "single" else "serve")
    if role == "recserve":
        # As a user runs it (Makefile: RAY_AUTH_MODE=disabled, set by _child_environment):
        # the CLI next to this interpreter, from the checkout (serve_config.yaml is its default
        # config), its data dir RECSERVE_DATA_DIR, the port by its flag. Its output (and that
        # of `serve run` and Ray, which it relays) goes to ``log``, not into the tables.
        recserve = Path(sys.executable).with_name("recserve")
        output = log.open("wb") if log is not None else subprocess.DEVNULL
        try:
            return subprocess.Popen(
                [str(recserve), "serve", "--port", str(port)],
                env=child_env,
                cwd=ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        finally:
            if log is not None:
                output.close()  # type: ignore[union-attr]
    command = [sys.executable, "-m", "benchmarks.serve", "--child", role, "--port", str(port)]
    return subprocess.Popen(command, env=child_env, cwd=ROOT)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def run_variant(
    variant: str, env: dict[str, str], tenants: dict[str, list[str]], args: Any
) -> dict:
    """One child process serving every tenant: ``{tenant: phases}`` and, after them, the RSS
    per process and the PSS per role of the server's processes."""
    port = _free_port()
    redis = LocalRedis().start() if VARIANT_ENV[variant].get(LOCAL_REDIS) else None
    if redis is not None:
        env = {**env, "RECSERVE_REDIS_URL": redis.url}
    cli = VARIANT_ENV[variant].get(CHILD) == "recserve"
    log = Path(env["RECSERVE_DATA_DIR"]) / f"{variant}.log" if cli else None
    process = _start(variant, port, env, log)
    stopped = False
    try:
        base = f"http://127.0.0.1:{port}"
        found: dict[str, Any] = {}
        for tenant, tokens in tenants.items():
            found[tenant] = asyncio.run(
                measure(
                    base,
                    tokens,
                    args.clients,
                    args.requests,
                    READY_TIMEOUT_S,
                    process,
                    tuple(args.algorithms.split(",")),
                    (False, True),
                    _profiler(args, process.pid, f"{variant}-{tenant}"),
                    args.profile_phase,
                    args.client,
                )
            )
        extra = [redis.pid] if redis is not None and redis.pid is not None else []
        processes = server_processes(process.pid, extra)
        found["rss_mib"] = {}
        for proc in processes:
            found["rss_mib"][proc.name] = found["rss_mib"].get(proc.name, 0.0) + proc.rss_mib
        found["pss_kib"] = {}
        for proc in processes:
            found["pss_kib"][proc.role] = found["pss_kib"].get(proc.role, 0) + proc.pss_kib
        found["processes"] = len(processes)
        found["process_memory"] = [
            {"pid": p.pid, "name": p.name, "role": p.role, "rss_mib": p.rss_mib,
             "pss_kib": p.pss_kib, "in_tree": p.in_tree}
            for p in processes
        ]  # fmt: skip
        found["outside_tree"] = sum(1 for proc in processes if not proc.in_tree)
        if cli:
            # SIGTERM, as a supervisor stops it; then what of its tree is still running
            from benchmarks.soak import stop_app  # not for the other roles' children to import

            found["stop"] = stop_app(process)
            stopped = True
        return found
    except BaseException:
        if log is not None and log.exists():
            tail = log.read_text(errors="replace").splitlines()[-30:]
            print(f"{variant} output, last lines:", *tail, sep="\n  ", file=sys.stderr)
        raise
    finally:
        if not stopped:
            if cli:
                from benchmarks.soak import stop_app

                stop_app(process)
            else:
                _stop(process)
        if redis is not None:
            redis.stop()


@dataclass
class ServerProcess:
    pid: int
    name: str  # as in the RSS table (process_tree's name)
    role: str  # the PSS table's group
    rss_mib: float
    pss_kib: int
    in_tree: bool  # a descendant of the started child (else found by its Ray session)


RAY_SESSION = re.compile(r"session_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+_\d+")


def server_processes(root_pid: int, extra: list[int] | None = None) -> list[ServerProcess]:
    """Every process of the server started as ``root_pid``: its descendants
    (``serve_load.process_tree``: for Ray, the GCS, raylet, dashboard and agents the driver
    starts, the workers and replicas the raylet starts; the local redis-server the CLI starts),
    the processes of ``extra`` (a redis-server this benchmark started for the variant), and any
    process of the same Ray session that re-parented out of the tree (one whose command line
    names the session the tree's Ray processes name: this Ray, not another on the machine)."""
    tree = process_tree(root_pid)
    members = {pid: name for pid, name in tree}
    for pid in extra or []:
        members.update(dict(process_tree(pid)))
    sessions = {m for pid in members for m in RAY_SESSION.findall(_cmdline(pid))}
    outside: dict[int, str] = {}
    if sessions:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) not in members:
                pid = int(entry.name)
                if any(s in _cmdline(pid) for s in sessions):
                    outside.update(dict(process_tree(pid)))
    found = []
    for pid, name in [*members.items(), *outside.items()]:
        if pid in members and pid in outside:
            continue
        try:
            pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
            pss = _pss_kib(pid)
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        role = process_role(pid, name, root_pid)
        name = _readable_name(pid, name, role)
        found.append(ServerProcess(pid, name, role, pages * 4096 / 2**20, pss, pid in members))
    return found


def _readable_name(pid: int, name: str, role: str) -> str:
    """``process_tree``'s name, unless it is a path's tail that says nothing: a redis-server's
    title is its listener, the dashboard's module processes' titles end with their command
    line, and Ray's Python processes are all "python"."""
    argv = _argv(pid)
    title = argv[0] if argv else ""
    if role == "redis-server":
        return role
    if title.startswith("ray-dashboard-"):
        return "ray dashboard modules"
    if helper := re.search(r"multiprocessing\.(\w+)", " ".join(argv)):
        return f"ray dashboard {helper.group(1)}"
    if role in ("ray", "serve run (driver)") and not title.startswith("ray::"):
        script = next((Path(a).name for a in argv[1:4] if a.endswith(".py")), "")
        return f"{Path(title).name} {script}".strip() if role == "ray" else role
    if role.endswith(("(CLI)", "(uvicorn)", "(child process)")):
        return role
    return name


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _cmdline(pid: int) -> str:
    return " ".join(_argv(pid))


def _pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def process_role(pid: int, name: str, root_pid: int) -> str:
    """A process's group in the PSS table: the deployment for a Serve replica (its title
    ``ray::ServeReplica:{app}:{deployment}``, whatever method Ray appends), "ray" for Ray's own
    processes, "redis-server", and for the rest what started them."""
    argv = _argv(pid)
    title = argv[0] if argv else name
    if "ServeReplica:" in title:
        return _replica_name(title.split("ServeReplica:")[-1]).rsplit(":", 1)[-1]
    if "redis-server" in title:
        return "redis-server"
    scripts = [Path(arg).name for arg in argv[1:3]]
    if "--child" in argv:  # this module's roles
        return f"{argv[argv.index('--child') + 1]} (child process)"
    if "benchmarks.handrolled" in argv:
        return "handrolled (uvicorn)"
    if "recserve" in scripts:
        return f"recserve {argv[scripts.index('recserve') + 2]} (CLI)"
    if "serve" in scripts:
        return "serve run (driver)"
    joined = " ".join(argv)
    if title.startswith(("ray::", "ray-dashboard")) or "/ray/" in joined:
        return "ray"
    # what a Ray process starts of its own (the dashboard's multiprocessing helpers)
    parent = _ppid(pid)
    if parent not in (None, root_pid) and process_role(parent, "", root_pid) == "ray":
        return "ray"
    return name


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _profiler(args: Any, pid: int, label: str) -> Profiler | None:
    return Profiler(pid, args.profile, label) if args.profile is not None else None


def print_profiles(results: dict[str, dict], tenants: list[str], phase: str) -> None:
    """CPU ms per request by process and layer, for the profiled phase of each variant."""
    for variant, by_tenant in results.items():
        for tenant in tenants:
            per_process = by_tenant.get(tenant, {}).get(phase, {}).get("profile")
            if per_process is None:
                continue
            total = sum(sum(layers.values()) for layers in per_process.values())
            print(f"\nprofile {variant} / {tenant} / {phase}: {total:.1f} CPU ms per request")
            print(Profile(requests=1, per_process=per_process).table())


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cpu(row: dict) -> float | None:
    spent = row.get("cpu_ms")
    return sum(spent.values()) if spent else None


def _ratios(
    results: dict[str, dict], reference: str, variant: str, tenant: str, phase: str, row: dict
) -> tuple[float | None, float | None]:
    """p50 and requests/s of ``row`` over the same phase of ``reference``, when measured."""
    if variant == reference or reference not in results:
        return None, None
    ref = results[reference].get(tenant, {}).get(phase)
    if not ref:
        return None, None
    return row["p50_ms"] / ref["p50_ms"], row["rps"] / ref["rps"]


def print_table(results: dict[str, dict], tenants: list[str]) -> None:
    width = max(12, *(len(v) + 1 for v in results))
    header = f"{'tenant':<10}{'variant':<{width}}{'request':<22}{'p50 ms':>9}{'p99 ms':>9}"
    header += f"{'req/s':>9}{'p50 x':>8}{'rps x':>8}{'p50 xh':>8}{'rps xh':>8}"
    header += f"{'CPU ms':>8}{'errors':>7}"
    print("x: the variant / single (uvicorn over the product's API); xh: / handrolled")
    print(header)
    print("-" * len(header))
    for tenant in tenants:
        for variant, found in results.items():
            for phase, row in found[tenant].items():
                if phase == IDLE:
                    continue
                p50x, rpsx = _ratios(results, "single", variant, tenant, phase, row)
                p50h, rpsh = _ratios(results, REFERENCE, variant, tenant, phase, row)
                print(
                    f"{tenant:<10}{variant:<{width}}{phase:<22}{row['p50_ms']:>9.1f}"
                    f"{row['p99_ms']:>9.1f}{row['rps']:>9.1f}{_fmt(p50x, 2):>8}"
                    f"{_fmt(rpsx, 2):>8}{_fmt(p50h, 2):>8}{_fmt(rpsh, 2):>8}"
                    f"{_fmt(_cpu(row)):>8}{row['errors']:>7}"
                )
    print(f"\nserver CPU ms per request by process, {CPU_PHASE}:")
    for tenant in tenants:
        for variant, found in results.items():
            spent = found[tenant].get(CPU_PHASE, {}).get("cpu_ms") or {}
            parts = sorted(spent.items(), key=lambda kv: -kv[1])
            listed = ", ".join(f"{name} {ms:.2f}" for name, ms in parts if ms >= 0.05)
            print(f"  {tenant} {variant}: total {sum(spent.values()):.2f}; {listed}")
    print("\nserver CPU while idle (ms per second, all processes; before the first phase):")
    for variant, found in results.items():
        idle = [sum(found[t].get(IDLE, {}).values()) for t in tenants]
        print(
            f"  {variant}: "
            + ", ".join(f"{t} {ms:.0f}" for t, ms in zip(tenants, idle, strict=True))
        )
    print("\nresident memory (MiB) after the run, per process:")
    for variant, found in results.items():
        parts = sorted(found["rss_mib"].items(), key=lambda kv: -kv[1])
        total = sum(v for _, v in parts)
        listed = ", ".join(f"{name} {mib:.0f}" for name, mib in parts[:14])
        print(f"  {variant}: total {total:.0f}; {listed}")
    print_pss(results)


def print_pss(results: dict[str, dict]) -> None:
    """PSS (KiB, /proc/<pid>/smaps_rollup) summed per role over each server's process tree."""
    print("\nproportional memory (PSS, MiB) after the run, per role, every process of the server:")
    header = f"{'variant':<24}{'role':<34}{'PSS MiB':>9}{'PSS KiB':>11}"
    print(header)
    print("-" * len(header))
    for variant, found in results.items():
        roles = sorted(found.get("pss_kib", {}).items(), key=lambda kv: -kv[1])
        for role, kib in roles:
            print(f"{variant:<24}{role:<34}{kib / 1024:>9.0f}{kib:>11}")
        total = sum(kib for _, kib in roles)
        note = f"{found.get('processes', 0)} processes"
        if found.get("outside_tree"):
            note += f", {found['outside_tree']} re-parented"
        print(f"{variant:<24}{'total (' + note + ')':<34}{total / 1024:>9.0f}{total:>11}")
    for variant, found in results.items():
        if "stop" in found:
            print(f"\n{variant} stopped by SIGTERM: {found['stop']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", default="1,8")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS)
    parser.add_argument("--data", type=Path, help="ML-100K folder: also measure that tenant")
    parser.add_argument("--no-demo", action="store_true", help="skip the generated tenant")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy every serving process during one phase; raw stacks here",
    )
    parser.add_argument("--profile-phase", default="hybrid/uncached/8")
    parser.add_argument(
        "--client",
        choices=("lean", "httpx"),
        default="lean",
        help="load generator: kept-alive raw HTTP/1.1 (default) or httpx",
    )
    parser.add_argument(
        "--child", choices=("single", "serve", "handrolled"), help=argparse.SUPPRESS
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        roles = {"single": _run_single, "serve": _run_serve, "handrolled": _run_handrolled}
        roles[args.child](args.port)
        return
    args.clients = [int(c) for c in args.clients.split(",")]
    variants = [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in variants if v not in VARIANT_ENV]
    if unknown:
        parser.error(f"unknown variants: {', '.join(unknown)}")
    if args.profile is not None and not Profiler.available():
        parser.error("--profile needs py-spy (pip install py-spy)")
    if shutil.which("haproxy") is None:
        for variant in [v for v in variants if "haproxy" in v]:
            print(f"haproxy is not installed: skipping {variant}", file=sys.stderr)
            variants.remove(variant)
    with tempfile.TemporaryDirectory(prefix="recserve-bench-serve-") as tmp:
        env = _child_environment(Path(tmp))
        os.environ.update(env)
        started = time.perf_counter()
        tenants = {}
        if not args.no_demo:
            tenants["demo"] = asyncio.run(prepare_tenant(Path(tmp), ENGINES))
        if args.data is not None and (args.data / "u.data").exists():
            tenants["ml-100k"] = asyncio.run(
                prepare_tenant(Path(tmp), ENGINES, args.data, "bench-ml100k.example")
            )
        print(f"trained {', '.join(ENGINES)} in {time.perf_counter() - started:.1f}s")
        results = {v: run_variant(v, dict(os.environ), tenants, args) for v in variants}
    print(f"load client: {args.client}")
    print_table(results, list(tenants))
    if args.profile is not None:
        print_profiles(results, list(tenants), args.profile_phase)
    if args.json is not None:
        report = {"engines": ENGINES, "requests": args.requests, "results": results}
        args.json.write_text(json.dumps(report, indent=2))


def _child_environment(data_dir: Path) -> dict[str, str]:
    """What every child (uvicorn, Ray driver, hence every replica) needs to see the same data."""
    return {
        "RECSERVE_ENV": "test",
        "RECSERVE_DATA_DIR": str(data_dir),
        "RECSERVE_JWT_SECRET": "bench-serve-secret-0123456789abcdef0123",
        # Latency under a retraining the benchmark did not ask for would measure that instead.
        "RECSERVE_SCHEDULER_ENABLED": "false",
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
        "RAY_USAGE_STATS_ENABLED": "0",
    }


if __name__ == "__main__":
    main()

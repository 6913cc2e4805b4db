"""Serving latency: the GraphQL API in one process versus the Ray Serve application.

One synthetic tenant (500 users x 400 items) is ingested and trained once into a temporary data
dir. Each variant then serves those same promoted models from a fresh child process:

- ``single``: uvicorn running ``create_app`` over ``deployments.inprocess.InProcessRecommender``;
- ``serve``: the full Serve app (GraphQL ingress, combiner, engines) on a fresh local Ray;
- ``serve-tput``: the same with ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` (set before Ray starts);
- ``serve-haproxy``: also ``RAY_SERVE_ENABLE_HA_PROXY=1`` (needs ``haproxy``; opt-in, because
  Ray then binds replica ports on every interface, not only 127.0.0.1).

Clients post ``recommendations`` queries for warm users, each (user, k) pair once per variant,
so the response cache never answers. Prints one table (p50, p99, requests/s per client count,
with serve / single ratios) and writes the JSON.

    python -m benchmarks.serve --json bench-serve.json [--requests 200] [--clients 1,8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.serve_load import measure, prepare_tenant

ENGINES = ["popularity", "item_knn", "ease", "als", "content"]
VARIANT_ENV: dict[str, dict[str, str]] = {
    "single": {},
    "serve": {},
    "serve-tput": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
    "serve-haproxy": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"},
}
DEFAULT_VARIANTS = "single,serve,serve-tput"
READY_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 60.0
MAX_CHILD_LIFETIME_S = 3600.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_single(port: int) -> None:
    import uvicorn

    from deployments.inprocess import InProcessRecommender
    from graph_api.app import create_app
    from storage.settings import Settings

    settings = Settings()
    app = create_app(recommender=InProcessRecommender(settings, ENGINES), settings=settings)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _exit(*_: object) -> None:
    raise SystemExit(0)


def _run_serve(port: int) -> None:
    import ray
    from ray import serve

    from deployments.app import AppArgs, compose

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    # After ray.init, which installs its own handler: SIGTERM must unwind through the finally
    # below, so the Ray processes this driver started stop with it.
    signal.signal(signal.SIGTERM, _exit)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(compose(AppArgs(engines=ENGINES)), name="bench", route_prefix="/")
        print("serving", flush=True)
        deadline = time.monotonic() + MAX_CHILD_LIFETIME_S
        while time.monotonic() < deadline:  # the parent stops us long before
            time.sleep(1.0)
    finally:
        serve.shutdown()
        ray.shutdown()


def _start(variant: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    role = "single" if variant == "single" else "serve"
    command = [sys.executable, "-m", "benchmarks.serve", "--child", role, "--port", str(port)]
    child_env = {**env, **VARIANT_ENV[variant]}
    return subprocess.Popen(command, env=child_env, cwd=Path(__file__).resolve().parents[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def run_variant(variant: str, env: dict[str, str], tokens: list[str], args: Any) -> dict:
    port = _free_port()
    process = _start(variant, port, env)
    try:
        base = f"http://127.0.0.1:{port}"
        return asyncio.run(
            measure(base, tokens, args.clients, args.requests, READY_TIMEOUT_S, process)
        )
    finally:
        _stop(process)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(results: dict[str, dict], clients: list[int]) -> None:
    base = results.get("single")
    header = f"{'variant':<14}{'clients':>8}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}"
    header += f"{'p50 x':>8}{'p99 x':>8}{'rps x':>8}{'errors':>8}"
    print(header)
    print("-" * len(header))
    for variant, by_clients in results.items():
        for c in clients:
            row = by_clients[str(c)]
            ref = base[str(c)] if base and variant != "single" else None
            ratios = [
                row[key] / ref[key] if ref and ref[key] else None
                for key in ("p50_ms", "p99_ms", "rps")
            ]
            print(
                f"{variant:<14}{c:>8}{row['p50_ms']:>10.1f}{row['p99_ms']:>10.1f}"
                f"{row['rps']:>10.1f}{_fmt(ratios[0], 2):>8}{_fmt(ratios[1], 2):>8}"
                f"{_fmt(ratios[2], 2):>8}{row['errors']:>8}"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", default="1,8")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS)
    parser.add_argument("--child", choices=("single", "serve"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        (_run_single if args.child == "single" else _run_serve)(args.port)
        return
    args.clients = [int(c) for c in args.clients.split(",")]
    variants = [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in variants if v not in VARIANT_ENV]
    if unknown:
        parser.error(f"unknown variants: {', '.join(unknown)}")
    if "serve-haproxy" in variants and shutil.which("haproxy") is None:
        print("haproxy is not installed: skipping serve-haproxy", file=sys.stderr)
        variants.remove("serve-haproxy")
    with tempfile.TemporaryDirectory(prefix="recserve-bench-serve-") as tmp:
        env = _child_environment(Path(tmp))
        os.environ.update(env)
        started = time.perf_counter()
        tokens = asyncio.run(prepare_tenant(Path(tmp), ENGINES))
        print(f"trained {', '.join(ENGINES)} in {time.perf_counter() - started:.1f}s")
        results = {v: run_variant(v, dict(os.environ), tokens, args) for v in variants}
    print_table(results, args.clients)
    if args.json is not None:
        report = {"engines": ENGINES, "requests": args.requests, "results": results}
        args.json.write_text(json.dumps(report, indent=2))


def _child_environment(data_dir: Path) -> dict[str, str]:
    """What every child (uvicorn, Ray driver, hence every replica) needs to see the same data."""
    return {
        "RECSERVE_ENV": "test",
        "RECSERVE_DATA_DIR": str(data_dir),
        "RECSERVE_JWT_SECRET": "bench-serve-secret-0123456789abcdef0123",
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
        "RAY_USAGE_STATS_ENABLED": "0",
    }


if __name__ == "__main__":
    main()

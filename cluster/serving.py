"""Start the Serve application from ``serve_config.yaml`` and talk to it over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from storage.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SERVE_CONFIG = ROOT / "serve_config.yaml"
EXAMPLE_QUERY = """query Example {
  recommendations(options: {numRecommendations: 5, explain: true}) {
    algorithm
    responseTimeMs
    items { score reason item { title category } }
    explanation { strategy enginesUsed enginesFailed modelVersion }
  }
}"""


def serve_environment(settings: Settings) -> dict[str, str]:
    """The environment for ``serve run``: replicas run elsewhere than this shell's directory,
    so the data dir goes as an absolute path; Ray's token auth is off unless asked for."""
    env = dict(os.environ)
    env["RECSERVE_DATA_DIR"] = str(settings.data_dir.resolve())
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Serve's throughput mode (gRPC between replicas) won in benchmarks/serve.py: on by default.
    env.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    # Serve's HTTP server (uvicorn) would otherwise believe X-Forwarded-For from any local
    # peer and hand the app a client-chosen address; the app reads that header itself, from
    # RECSERVE_TRUSTED_PROXIES only (graph_api.clients).
    env["FORWARDED_ALLOW_IPS"] = ""
    return env


def start_serve(settings: Settings, config: Path = SERVE_CONFIG) -> subprocess.Popen[bytes]:
    serve = Path(sys.executable).with_name("serve")
    command = [str(serve), "run", str(config)]
    return subprocess.Popen(command, env=serve_environment(settings), cwd=ROOT)


def _exit_on_sigterm(*_: object) -> NoReturn:
    raise SystemExit(128 + signal.SIGTERM)


@contextmanager
def stopping_with_this_process(
    process: subprocess.Popen[bytes], timeout_s: float = 60.0
) -> Iterator[subprocess.Popen[bytes]]:
    """``process`` ends when this block does, however it ends: a supervisor's SIGTERM too, on
    which Python would otherwise exit at once and leave ``serve run`` (and the Ray it started)
    running. Ctrl-C reaches both already (the terminal signals the whole process group)."""
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield process
    finally:
        signal.signal(signal.SIGTERM, previous)
        if process.poll() is None:
            process.terminate()  # `serve run` shuts Serve and its Ray down on SIGTERM
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until_ready(
    base_url: str, *, timeout_s: float = 300.0, process: subprocess.Popen[bytes] | None = None
) -> dict[str, Any]:
    """Poll ``/health`` until the app answers; fail early if the serving process died."""
    deadline = time.monotonic() + timeout_s
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"serve exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=5) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            last_error = str(error)
        time.sleep(1.0)
    raise TimeoutError(f"{base_url} did not become ready in {timeout_s:.0f}s ({last_error})")


def graphql(
    base_url: str, query: str, *, token: str | None = None, variables: dict | None = None
) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{base_url}/graphql", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        return json.loads(error.read() or b"{}")

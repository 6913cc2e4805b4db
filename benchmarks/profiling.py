"""Where a request's milliseconds go: py-spy on every serving process during one load phase.

``Profiler(root_pid, out_dir)`` finds the serving processes under ``root_pid`` (the uvicorn
process of the single-process app, or every Serve replica and proxy), records each with
``py-spy record --gil --format raw`` while a phase runs (only the thread holding the GIL is
sampled, so idle and native-waiting threads do not count), and sums the samples by layer: each
sample counts for the innermost frame that names a layer (GraphQL parse/validate, auth, rate
limit, result cache, SQL, Serve handle calls, (de)serialisation, engine scoring, blending,
hydration, HTTP/ASGI, event loop). Dividing by the requests the phase served gives CPU
milliseconds per request, per process and layer: the summary ``benchmarks.serve --profile``
prints and writes beside the raw stacks.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.serve_load import process_tree

# py-spy reads the processes' memory without pausing them (--nonblocking): attached to a
# dozen processes on two cores, pausing ones cut Serve's throughput a hundredfold.
RATE_HZ = 100
# (layer, substrings of a frame "function (path:line)"); the innermost matching frame wins, and
# within one frame the first listed layer.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("engine scoring", ("training/algorithms/", "recommend/scoring.py")),
    ("blending", ("training/hybrid.py", "blend (recommend/step.py")),
    ("diversify/explain", ("mmr", "explain")),
    ("(de)serialisation", ("pickle", "serializ", "msgpack", "json", "orjson", "pydantic")),
    ("auth (JWT)", ("jwt/", "graph_api/auth.py")),
    ("rate limit", ("graph_api/ratelimit.py", "graph_api/query_limits.py")),
    ("result cache", ("graph_api/result_cache.py", "storage/cache/")),
    ("SQL", ("sqlalchemy/", "aiosqlite", "asyncpg", "storage/repositories/")),
    ("hydration", ("graph_api/row_cache.py", "graph_api/loaders.py")),
    ("GraphQL parse/validate", ("graphql/language/", "graphql/validation/", "DocumentCache")),
    ("GraphQL execute", ("graphql/execution/", "strawberry/")),
    ("Serve handle/router", ("ray/serve/handle", "ray/serve/_private/router", "replica_scheduler")),
    ("Serve replica/proxy", ("ray/serve/",)),
    ("Ray core", ("ray/_private/", "ray/_raylet", "ray/actor", "grpc")),
    ("HTTP/ASGI", ("uvicorn/", "starlette/", "fastapi/", "h11", "httptools")),
    ("event loop", ("asyncio/", "uvloop")),
)
OTHER = "other"
# Besides the root (uvicorn's process for the single-process app), the processes a request
# passes through: Serve's replicas and proxies.
SERVING = ("bench:", "ray::ProxyActor", "ray::HAProxyManager")


def layer_of(stack: str) -> str:
    """The layer of one sample's stack (``outer;...;inner``), innermost match first."""
    for frame in reversed(stack.split(";")):
        for layer, needles in LAYERS:
            if any(needle in frame for needle in needles):
                return layer
    return OTHER


def summarise(raw: str) -> Counter[str]:
    """Samples per layer from py-spy's raw (collapsed) output: ``stack count`` per line."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, number = line.rpartition(" ")
        if stack and number.isdigit():
            counts[layer_of(stack)] += int(number)
    return counts


@dataclass
class Profile:
    """CPU milliseconds per request, by process and layer."""

    requests: int
    per_process: dict[str, dict[str, float]] = field(default_factory=dict)

    def table(self) -> str:
        lines = []
        for process, layers in sorted(self.per_process.items(), key=lambda p: -sum(p[1].values())):
            total = sum(layers.values())
            lines.append(f"  {process}: {total:.2f} CPU ms/request")
            for layer, ms in sorted(layers.items(), key=lambda item: -item[1]):
                if ms >= 0.05:
                    lines.append(f"      {layer:<24} {ms:6.2f}")
        return "\n".join(lines)


class Profiler:
    """py-spy on every Python process under ``root_pid`` between ``start()`` and ``stop()``."""

    def __init__(self, root_pid: int, out_dir: Path, label: str) -> None:
        self.root_pid, self.out_dir, self.label = root_pid, out_dir, label
        self._running: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
        self._started = 0.0

    @staticmethod
    def available() -> bool:
        return _py_spy() is not None

    def start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        seen: Counter[str] = Counter()
        for pid, name in process_tree(self.root_pid):
            serving = pid == self.root_pid or name.startswith(SERVING)
            if not (serving and _is_python(pid)):
                continue
            seen[name] += 1
            title = name if seen[name] == 1 else f"{name}#{seen[name]}"
            target = self.out_dir / f"{self.label}-{title.replace(':', '_')}.txt"
            command = [
                str(_py_spy()),
                "record",
                "--gil",
                "--nonblocking",
                "--format",
                "raw",
                "-r",
                str(RATE_HZ),
                "-p",
                str(pid),
            ]
            process = subprocess.Popen(
                [*command, "-o", str(target)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            self._running.append((title, target, process))
        self._started = time.monotonic()

    def stop(self, requests: int) -> Profile:
        for _, _, process in self._running:
            process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        profile = Profile(requests=max(requests, 1))
        for title, target, process in self._running:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                continue
            if not target.exists():
                continue
            counts = summarise(target.read_text())
            to_ms = 1000.0 / RATE_HZ / profile.requests
            profile.per_process[title] = {layer: n * to_ms for layer, n in counts.items()}
        self._running.clear()
        return profile


def _py_spy() -> str | None:
    """py-spy beside this interpreter (the project's virtualenv), else on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def _is_python(pid: int) -> bool:
    try:
        exe = Path(f"/proc/{pid}/exe").resolve().name
    except OSError:
        return False
    return exe.startswith("python")

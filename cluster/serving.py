"""Start the Serve application from ``serve_config.yaml`` and talk to it over HTTP."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, NoReturn, TextIO

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


LOOPBACK = ("127.0.0.1", "::1")  # where HAProxy reaches the replicas of its own node from
HAPROXY_FRONT = "haproxy-front.sh"  # in the data dir: Ray's HAProxy binary, with forwardfor


def haproxy_binary(env: dict[str, str]) -> str | None:
    """The ``haproxy`` on PATH (or Debian's, whose /usr/sbin a user's PATH may lack), or None."""
    return shutil.which("haproxy", path=env.get("PATH")) or shutil.which(
        "haproxy", path="/usr/sbin"
    )


def serve_environment(
    settings: Settings, cache_url: str | None = None, *, haproxy: str | None = None
) -> dict[str, str]:
    """The environment for ``serve run``: replicas run elsewhere than this shell's directory,
    so the data dir goes as an absolute path; ``cache_url`` is the Redis every replica shares
    (``cluster.local_redis`` when none is configured); Ray's token auth is off unless asked
    for. ``haproxy``: the binary for Serve's HAProxy mode, which is on unless the environment
    says ``RAY_SERVE_ENABLE_HA_PROXY=0`` (see ``haproxy_mode``)."""
    env = dict(os.environ)
    env["RECSERVE_DATA_DIR"] = str(settings.data_dir.resolve())
    if cache_url:
        env["RECSERVE_REDIS_URL"] = cache_url
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Serve's throughput mode (gRPC between replicas) won in benchmarks/serve.py: on by default.
    env.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    # Which brings direct ingress, whose replicas stay open 30 s when stopped so that a load
    # balancer can deregister them. `serve run` here has none to wait for: without this, Ctrl-C
    # took 35 s, nearly all of it the ingress replicas' drain.
    env.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")
    # Serve's HTTP server (uvicorn) would otherwise believe X-Forwarded-For from any local
    # peer and hand the app a client-chosen address; the app reads that header itself, from
    # RECSERVE_TRUSTED_PROXIES only (graph_api.clients).
    env["FORWARDED_ALLOW_IPS"] = ""
    if haproxy is not None and env.get("RAY_SERVE_ENABLE_HA_PROXY", "1") == "1":
        haproxy_mode(env, settings.data_dir.resolve(), haproxy)
    return env


def haproxy_mode(env: dict[str, str], folder: Path, haproxy: str) -> None:
    """HAProxy in front of the ingress replicas instead of Ray's Python proxy, which cost a
    cached answer 11.8 ms of CPU against 2.2 (docs/benchmarks.md). Ray's configuration of it
    adds no X-Forwarded-For: the binary Ray runs is ``cluster.haproxy_front`` around
    ``haproxy``, which adds it, and the loopback addresses HAProxy connects from join the
    trusted proxies, so that per-IP limits stay per client."""
    env["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    folder.mkdir(parents=True, exist_ok=True)
    front = folder / HAPROXY_FRONT
    front.write_text(
        "#!/bin/sh\n"
        f"exec {shlex.quote(sys.executable)} -m cluster.haproxy_front {shlex.quote(haproxy)}"
        ' "$@"\n'
    )
    front.chmod(0o755)
    env["RAY_SERVE_HAPROXY_BINARY_PATH"] = str(front)
    trusted = [entry for entry in env.get("RECSERVE_TRUSTED_PROXIES", "").split(",") if entry]
    env["RECSERVE_TRUSTED_PROXIES"] = ",".join(dict.fromkeys([*trusted, *LOOPBACK]))


def start_serve(
    settings: Settings,
    config: Path = SERVE_CONFIG,
    *,
    cache_url: str | None = None,
    port: int | None = None,
    host: str | None = None,
) -> ServeRun:
    """``serve run config`` (``cluster.serve_run``); on ``port`` and ``host`` when given
    (``serve run`` takes them only from the config's ``http_options``, so a copy of the config
    with them is run instead). In HAProxy mode the replicas listen on ``host`` too."""
    if port is not None or host is not None:
        config = config_listening(config, settings.data_dir.resolve(), port=port, host=host)
    # `serve run`, with Ray's dashboard only when asked for (cluster.serve_run)
    command = [sys.executable, "-m", "cluster.serve_run", str(config)]
    env = serve_environment(settings, cache_url, haproxy=haproxy_binary(dict(os.environ)))
    return ServeRun(command, env=env, cwd=ROOT)


def config_listening(
    config: Path, folder: Path, *, port: int | None = None, host: str | None = None
) -> Path:
    """A copy of the Serve config in ``folder`` whose HTTP side listens on ``host``:``port``
    (each one the config's own when None)."""
    import yaml

    loaded = yaml.safe_load(config.read_text())
    options = loaded.setdefault("http_options", {})
    wanted = {"port": port, "host": host}
    wanted = {key: value for key, value in wanted.items() if value is not None}
    if all(options.get(key) == value for key, value in wanted.items()):
        return config
    options.update(wanted)
    folder.mkdir(parents=True, exist_ok=True)
    name = "-".join(f"{key}-{value}" for key, value in sorted(wanted.items()))
    copy = folder / f"serve_config.{name.replace(':', '_')}.yaml"
    copy.write_text(yaml.safe_dump(loaded, sort_keys=False))
    return copy


def _default_sigint() -> None:  # pragma: no cover - runs in the child before exec
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class ServeRun(subprocess.Popen[bytes]):
    """``serve run`` in a session of its own, its output relayed to ours until :meth:`mute`.

    The terminal's Ctrl-C signals its whole foreground process group: sharing ours, ``serve
    run`` and the Ray it starts would each get it and shut down at once, printing their
    tracebacks, while this process stopped them again. In their own session only the
    supervising process gets it and stops them in order (:func:`stop`)."""

    def __init__(self, command: list[str], *, env: dict[str, str], cwd: Path) -> None:
        super().__init__(
            command,
            env=env,
            cwd=cwd,
            start_new_session=True,
            # Launched in the background of a script (or with nohup) this process has SIGINT
            # ignored, which a child inherits: `serve run` would then never see the SIGINT
            # that stops it in order, and would be killed after ``stop``'s timeout instead.
            preexec_fn=_default_sigint,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._muted = threading.Event()
        # What it says once muted: shown only if it has to be killed.
        self.muted_output: deque[bytes] = deque(maxlen=50)
        assert self.stdout is not None and self.stderr is not None
        self._relays = [
            threading.Thread(target=self._relay, args=(self.stdout, sys.stdout), daemon=True),
            threading.Thread(target=self._relay, args=(self.stderr, sys.stderr), daemon=True),
        ]
        for relay in self._relays:
            relay.start()

    def mute(self) -> None:
        """Keep its output from now on (its shutdown's log lines) instead of relaying it."""
        self._muted.set()

    def join_output(self, timeout_s: float = 5.0) -> None:
        for relay in self._relays:
            relay.join(timeout_s)

    def _relay(self, source: IO[bytes], target: TextIO) -> None:
        binary = getattr(target, "buffer", None)  # bytes as they come, progress bars included
        while chunk := os.read(source.fileno(), 65536):
            if self._muted.is_set():
                self.muted_output.append(chunk)
                continue
            try:
                target.flush()
                if binary is None:
                    target.write(chunk.decode(errors="replace"))
                else:
                    binary.write(chunk)
                    binary.flush()
            except (OSError, ValueError):  # the terminal is gone; keep draining the pipe
                self._muted.set()


class Terminated(SystemExit):
    """This process got SIGTERM or SIGHUP (a supervisor's stop, its terminal closing)."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def _exit_on_signal(signum: int, _frame: object) -> NoReturn:
    raise Terminated(signum)


@contextmanager
def stopping_with_this_process(
    process: subprocess.Popen[bytes], timeout_s: float = 60.0
) -> Iterator[subprocess.Popen[bytes]]:
    """``process`` ends when this block does, however it ends: Ctrl-C's KeyboardInterrupt, a
    supervisor's SIGTERM or the terminal's SIGHUP too, on which Python would otherwise exit at
    once and leave ``serve run`` (and the Ray it started) running, see :func:`stop`."""
    previous = {
        signum: signal.signal(signum, _exit_on_signal) for signum in (signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield process
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        stop(process, timeout_s)


def stop(process: subprocess.Popen[bytes], timeout_s: float = 60.0, grace_s: float = 10.0) -> None:
    """Stop ``process`` quietly: SIGINT, on which ``serve run`` shuts Serve and then its Ray
    down (SIGTERM makes Ray print a stack dump); if it has not ended in ``timeout_s``, SIGTERM
    and then SIGKILL, to its process group when it leads one (its Ray's head processes).
    Another Ctrl-C meanwhile kills it at once. Its shutdown's output is kept back unless it
    hung."""
    relayed = process if isinstance(process, ServeRun) else None
    if process.poll() is not None:  # it ended by itself: what it said last is shown whole
        if relayed:
            relayed.join_output()
        return
    if relayed:
        relayed.mute()
    forced = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: forced.set())
    try:
        process.send_signal(signal.SIGINT)
        if _wait(process, timeout_s, forced):
            return
        # A second Ctrl-C kills at once; a hang gets SIGTERM first, then SIGKILL.
        if forced.is_set() or (
            _signal_group(process, signal.SIGTERM) or not _wait(process, grace_s, forced)
        ):
            _signal_group(process, signal.SIGKILL)
            process.wait()
        if forced.is_set():
            print("serve run killed on a second Ctrl-C", file=sys.stderr)
            return
        if relayed:  # what it said meanwhile may tell why it hung
            relayed.join_output()
            sys.stderr.write(b"".join(relayed.muted_output).decode(errors="replace"))
        print(f"serve run did not stop on SIGINT: killed after {timeout_s:.0f}s", file=sys.stderr)
    finally:
        signal.signal(signal.SIGINT, previous)


def _wait(process: subprocess.Popen[bytes], timeout_s: float, forced: threading.Event) -> bool:
    deadline = time.monotonic() + timeout_s
    while not forced.is_set() and time.monotonic() < deadline:
        try:
            process.wait(timeout=0.2)
            return True
        except subprocess.TimeoutExpired:
            pass
    return process.poll() is not None


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    try:
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
    except ProcessLookupError:
        pass


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

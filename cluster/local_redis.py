"""A Redis of its own for ``recserve serve`` and ``recserve demo`` when none is configured.

The Serve app runs several replicas (two ingress replicas in ``serve_config.yaml``), each in its
own process: an in-process cache would give each its own cached lists, rate-limit windows and
pub/sub, so one replica would serve a list another had invalidated, and a subscription opened on
one would miss events published on the other. With no ``RECSERVE_REDIS_URL`` the CLI therefore
starts the machine's ``redis-server`` on a Unix socket in a private temporary folder (nothing to
persist: ``--save ""``, no append-only file), hands its URL to ``serve run``, and stops it after
the app; the replicas then share one cache exactly as they do in production.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from storage.errors import StorageError

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
INSTALL_HINT = (
    "the Serve app's replicas need a shared cache: install Redis (Debian/Ubuntu: "
    "`apt install redis-server`, macOS: `brew install redis`) so that recserve starts one "
    "itself, or point RECSERVE_REDIS_URL at yours"
)


class LocalRedisError(StorageError):
    """No ``redis-server`` to start, or it did not come up."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """On Linux the server gets SIGTERM if this process dies without stopping it (SIGKILL)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LocalRedis:
    """One ``redis-server`` on a Unix socket; ``url`` is what ``RECSERVE_REDIS_URL`` takes."""

    def __init__(self, binary: str | None = None) -> None:
        found = binary or shutil.which("redis-server")
        if found is None:
            raise LocalRedisError(f"no redis-server on PATH: {INSTALL_HINT}")
        self.binary = found
        self.folder = Path(tempfile.mkdtemp(prefix="recserve-redis-"))
        self.socket = self.folder / "redis.sock"
        self.url = f"unix://{self.socket}"
        self.log = self.folder / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalRedis:
        command = [
            self.binary,
            "--port", "0",  # no TCP listener: only this machine's processes, by the socket
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.folder),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", str(self.log),
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # the terminal's Ctrl-C is for recserve, which stops it last
            preexec_fn=_die_with_parent,
        )
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if self.socket.exists() and self.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise LocalRedisError(f"redis-server did not start: {self._log_tail()}")

    def ping(self) -> bool:
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1.0)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its folder."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _log_tail(self) -> str:
        try:
            return " / ".join(self.log.read_text().strip().splitlines()[-3:]) or "no output"
        except OSError:
            return "no log"


@contextlib.contextmanager
def shared_cache_url(configured: str | None) -> Iterator[str]:
    """``configured`` as it is, or the URL of a local Redis that lives as long as the block."""
    if configured:
        yield configured
        return
    server = LocalRedis().start()
    try:
        yield server.url
    finally:
        server.stop()

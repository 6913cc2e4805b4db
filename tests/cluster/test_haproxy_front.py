"""HAProxy as `recserve serve` runs it (``cluster.haproxy_front``): the client's address reaches
the app through ``X-Forwarded-For``, and a client cannot choose it."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.haproxy_front import FORWARDFOR, with_forwardfor
from cluster.serving import LOOPBACK, haproxy_mode, serve_environment
from graph_api.clients import ClientAddresses
from storage.settings import Settings

# The shape of Ray Serve's configuration (ray/serve/_private/haproxy_templates.py): a global
# section, defaults with options, a frontend and a backend of replicas.
RAY_LIKE = """global
    maxconn 64
defaults
    mode http
    option log-health-checks
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option httplog
frontend http_frontend
    bind 127.0.0.1:{front}
    default_backend app
backend app
    server replica1 127.0.0.1:{back} check
"""


def test_the_option_goes_into_the_defaults_section_once() -> None:
    config = RAY_LIKE.format(front=1, back=2)
    patched = with_forwardfor(config)
    lines = patched.splitlines()
    assert lines[lines.index("defaults") + 1] == FORWARDFOR
    assert with_forwardfor(patched) == patched
    assert patched.count("forwardfor") == 1
    assert with_forwardfor("global\n    maxconn 1\n") == "global\n    maxconn 1\n"


def test_serve_runs_haproxy_through_the_front_and_trusts_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_SERVE_ENABLE_HA_PROXY", raising=False)
    monkeypatch.delenv("RECSERVE_TRUSTED_PROXIES", raising=False)
    settings = Settings(data_dir=tmp_path)
    env = serve_environment(settings, haproxy="/usr/sbin/haproxy")
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    front = Path(env["RAY_SERVE_HAPROXY_BINARY_PATH"])
    assert os.access(front, os.X_OK)
    assert "cluster.haproxy_front /usr/sbin/haproxy" in front.read_text()
    assert env["RECSERVE_TRUSTED_PROXIES"].split(",")[-2:] == list(LOOPBACK)
    # Configured proxies stay trusted; loopback is added, not substituted.
    env = {"RECSERVE_TRUSTED_PROXIES": "10.0.0.0/8"}
    haproxy_mode(env, tmp_path, "/usr/sbin/haproxy")
    assert env["RECSERVE_TRUSTED_PROXIES"] == "10.0.0.0/8,127.0.0.1,::1"
    # Without haproxy, or when the operator turned it off: Ray's Python proxy.
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in serve_environment(settings, haproxy=None)
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "0")
    off = serve_environment(settings, haproxy="/usr/sbin/haproxy")
    assert off["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    assert "RAY_SERVE_HAPROXY_BINARY_PATH" not in off


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers with the client address the app would use, from the peer and the header."""

    addresses = ClientAddresses(list(LOOPBACK))

    def do_GET(self) -> None:  # http.server's name
        forwarded = self.headers.get_all("X-Forwarded-For") or []
        body = json.dumps(
            {"client": self.addresses.resolve(self.client_address[0], forwarded)}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def haproxy_in_front(tmp_path: Path) -> Iterator[int]:
    """Real HAProxy, started as Ray starts it (the binary named by the front script, with
    ``-db -f config``), in front of the echo server; yields HAProxy's port."""
    binary = shutil.which("haproxy")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("haproxy is not installed (.ci/run installs it)")
        pytest.skip("haproxy is not installed")
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    front_port = _free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(RAY_LIKE.format(front=front_port, back=backend.server_address[1]))
    env: dict[str, str] = {}
    haproxy_mode(env, tmp_path, binary)
    process = subprocess.Popen(
        [env["RAY_SERVE_HAPROXY_BINARY_PATH"], "-db", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", front_port), timeout=0.2).close()
                break
            except OSError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                time.sleep(0.05)
        # Ray recognises its HAProxy processes by its config file on their command line.
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert str(config).encode() in cmdline
        assert FORWARDFOR in config.read_text()
        yield front_port
    finally:
        process.terminate()
        process.wait(timeout=10)
        backend.shutdown()


def _client_seen(port: int, source: str, headers: dict[str, str] | None = None) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, source_address=(source, 0))
    try:
        connection.request("GET", "/", headers=headers or {})
        return json.loads(connection.getresponse().read())["client"]
    finally:
        connection.close()


@pytest.mark.skipif(sys.platform != "linux", reason="127.0.0.2 is loopback on Linux")
def test_the_app_sees_each_client_behind_haproxy(haproxy_in_front: int) -> None:
    # HAProxy connects to the replica from 127.0.0.1; the client here comes from 127.0.0.2.
    assert _client_seen(haproxy_in_front, "127.0.0.2") == "127.0.0.2"
    assert _client_seen(haproxy_in_front, "127.0.0.3") == "127.0.0.3"
    # A client naming another address is still itself: HAProxy's hop is read, not the client's.
    forged = {"X-Forwarded-For": "203.0.113.9"}
    assert _client_seen(haproxy_in_front, "127.0.0.2", forged) == "127.0.0.2"

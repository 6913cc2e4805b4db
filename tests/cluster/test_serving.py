"""`recserve serve` and `recserve demo` take `serve run` down with them: on Ctrl-C quietly and
with status 0, on a supervisor's SIGTERM too."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from cluster.serving import SERVE_CONFIG, ServeRun, stop

ROOT = Path(__file__).resolve().parents[2]
# Stands in for `recserve serve`: a child that would run for minutes, held by the context.
PARENT = """
import subprocess, sys, time
from cluster.serving import stopping_with_this_process
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
with stopping_with_this_process(child, timeout_s=10) as process:
    print(child.pid, flush=True)  # once its SIGTERM handler is in place
    process.wait()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # reaped by its parent, or a zombie nobody waits for any more
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def test_a_sigterm_to_the_cli_stops_its_serve_process() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "serve run outlived the CLI that started it"
    finally:
        if parent.poll() is None:
            parent.kill()


# Stands in for `serve run`, as far as signals go: it starts a child in its process group (Ray's
# head processes), shuts down on KeyboardInterrupt with a log line, and answers SIGTERM with the
# stack dump Ray's failure-signal handler prints. Its pids go to $STAND_IN_PIDS once it serves.
STAND_IN = """#!{python}
import os, signal, subprocess, sys, time
from pathlib import Path

ray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])

def dump(*_):
    print("*** SIGTERM received at time=0 on cpu 0 ***", flush=True)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)

signal.signal(signal.SIGTERM, dump)
if os.environ.get("STAND_IN_HANGS"):  # a shutdown that never ends; the SIGINT is noted
    signal.signal(signal.SIGINT, lambda *_: Path(os.environ["STAND_IN_PIDS"] + ".sigint").touch())
print("stand-in serve run: serving", flush=True)
pids = Path(os.environ["STAND_IN_PIDS"])
pids.with_suffix(".cache").write_text(os.environ.get("RECSERVE_REDIS_URL", ""))
pids.with_suffix(".config").write_text(sys.argv[-1])
pids.with_suffix(".new").write_text(f"{{os.getpid()}} {{ray.pid}}")
pids.with_suffix(".new").rename(pids)
try:
    while True:
        time.sleep(0.1)
except KeyboardInterrupt:
    print("INFO scripts.py:591 -- Got KeyboardInterrupt, shutting down...", flush=True)
    time.sleep(0.5)
    ray.terminate()
    ray.wait()
    sys.exit()
"""
# `recserve serve` itself; start_serve runs `python -m cluster.serve_run` with the interpreter it
# runs under: the stand-in, which takes the config as its last argument as `serve run` does.
CLI = """
import sys
sys.executable = sys.argv[1]
from cluster.cli import app
app(["serve", *sys.argv[2:]], prog_name="recserve")
"""


def _stand_in(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """The command running `recserve serve` around the stand-in, and its environment."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    serve = bin_dir / "python"
    serve.write_text(STAND_IN.format(python=sys.executable))
    serve.chmod(0o755)
    cli = tmp_path / "recserve_serve.py"
    cli.write_text(CLI)
    env = dict(os.environ)
    env["RECSERVE_DATA_DIR"] = str(tmp_path / "data")
    env["STAND_IN_PIDS"] = str(tmp_path / "pids")
    return [sys.executable, str(cli), str(bin_dir / "python")], env


def _wait_for_pids(path: Path, process: subprocess.Popen) -> list[int]:
    deadline = time.monotonic() + 60
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert path.exists(), "the stand-in never served"
    return [int(pid) for pid in path.read_text().split()]


def _left_alive(pids: list[int]) -> list[int]:
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [pid for pid in pids if _alive(pid)]


def _signal_when_serving(
    command: list[str], env: dict[str, str], *, group: bool = True, signum: int = signal.SIGINT
) -> tuple[int, str, list[int]]:
    """Run ``command`` as a terminal's foreground job; once `serve run` serves, press Ctrl-C
    (SIGINT to the whole process group), or send ``signum`` to the command only (``group``
    false: a supervisor). Its exit status, its output and the stand-in's pids still alive."""
    job = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    pids: list[int] = []
    try:
        pids = _wait_for_pids(Path(env["STAND_IN_PIDS"]), job)
        if group:
            os.killpg(job.pid, signum)
        else:
            job.send_signal(signum)
        output, _ = job.communicate(timeout=60)
        return job.returncode, output, _left_alive(pids)
    finally:
        for pid in [job.pid, *pids]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_cli_started_with_sigint_ignored_still_stops_serve_run_in_order(
    tmp_path: Path,
) -> None:
    """Started in a script's background (SIGINT ignored, inherited by children), a SIGTERM
    still takes `serve run` down by its SIGINT at once, not by the kill after a minute."""
    command, env = _stand_in(tmp_path)
    ignoring = [
        sys.executable,
        "-c",
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
        "os.execv(sys.argv[1], sys.argv[1:])",
        *command,
    ]
    started = time.monotonic()
    code, output, left = _signal_when_serving(ignoring, env, group=False, signum=signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, output
    assert time.monotonic() - started < 30 and "killed after" not in output, output
    assert not left, "serve run or its Ray outlived the CLI"


def _assert_stopped_quietly(output: str) -> None:
    assert "stand-in serve run: serving" in output  # its output reaches the terminal meanwhile
    assert output.count("stopped") == 1 and "recserve stopped" in output, output
    for noise in ("Traceback", "KeyboardInterrupt", "SIGTERM", "Aborted"):
        assert noise not in output, output


@pytest.mark.slow
def test_ctrl_c_stops_recserve_serve_quietly_with_status_0(tmp_path: Path) -> None:
    command, env = _stand_in(tmp_path)
    env.pop("RECSERVE_REDIS_URL", None)
    code, output, left = _signal_when_serving(command, env)
    assert code == 0, output
    _assert_stopped_quietly(output)
    assert not left, "serve run or its Ray outlived the CLI"
    # No Redis configured: serve run was given the local one, which is gone with it.
    url = (tmp_path / "pids.cache").read_text()
    assert url.startswith("unix://") and url.endswith("redis.sock"), url
    assert not Path(url.removeprefix("unix://")).parent.exists(), "the local Redis outlived it"


@pytest.mark.slow
def test_a_configured_redis_is_the_one_serve_run_gets(tmp_path: Path) -> None:
    command, env = _stand_in(tmp_path)
    env["RECSERVE_REDIS_URL"] = "redis://cache.example:6379/3"
    code, output, _ = _signal_when_serving(command, env)
    assert code == 0, output
    assert (tmp_path / "pids.cache").read_text() == "redis://cache.example:6379/3"


@pytest.mark.slow
def test_serve_port_runs_the_config_on_that_port(tmp_path: Path) -> None:
    command, env = _stand_in(tmp_path)
    code, output, _ = _signal_when_serving([*command, "--port", "8123"], env)
    assert code == 0, output
    ran = yaml.safe_load(Path((tmp_path / "pids.config").read_text()).read_text())
    shipped = yaml.safe_load(SERVE_CONFIG.read_text())
    assert ran["http_options"]["port"] == 8123
    # On this machine only unless told (in HAProxy mode the replicas' ports follow the host).
    assert ran["http_options"]["host"] == "127.0.0.1"
    assert shipped["http_options"] == {"host": "0.0.0.0", "port": 8000}  # left as it is
    ran["http_options"] = shipped["http_options"]
    assert ran == shipped  # nothing else changed


@pytest.mark.slow
def test_serve_host_opens_the_app_to_other_machines(tmp_path: Path) -> None:
    command, env = _stand_in(tmp_path)
    code, output, _ = _signal_when_serving([*command, "--host", "0.0.0.0"], env)
    assert code == 0, output
    ran = yaml.safe_load(Path((tmp_path / "pids.config").read_text()).read_text())
    assert ran["http_options"] == {"host": "0.0.0.0", "port": 8000}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_ctrl_c_on_make_reports_no_error(tmp_path: Path) -> None:
    """``make demo``'s shape: make waits for its recipe, which must not fail on Ctrl-C
    (make prints "Error 130" when it does). make itself ends by the SIGINT it got too."""
    command, env = _stand_in(tmp_path)
    makefile = tmp_path / "Makefile"
    makefile.write_text("serve:\n\t" + " ".join(command) + "\n")
    code, output, left = _signal_when_serving(["make", "-f", str(makefile)], env)
    assert code in (0, -signal.SIGINT), output
    assert "make: ***" not in output, output
    _assert_stopped_quietly(output)
    assert not left, "serve run or its Ray outlived the CLI"


@pytest.mark.slow
def test_a_supervisors_sigterm_to_recserve_serve_stops_it_quietly(tmp_path: Path) -> None:
    command, env = _stand_in(tmp_path)
    code, output, left = _signal_when_serving(command, env, group=False, signum=signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, output
    _assert_stopped_quietly(output)
    assert not left, "serve run or its Ray outlived the CLI"


def test_a_serve_run_that_ignores_sigint_is_killed_with_its_group(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    _, env = _stand_in(tmp_path)
    env["STAND_IN_HANGS"] = "1"
    process = ServeRun([str(tmp_path / "bin" / "python")], env=env, cwd=ROOT)
    pids: list[int] = []
    try:
        pids = _wait_for_pids(Path(env["STAND_IN_PIDS"]), process)
        started = time.monotonic()
        stop(process, timeout_s=1, grace_s=5)
        assert time.monotonic() - started < 5
        assert process.returncode == -signal.SIGTERM
        assert not _left_alive(pids), "its process group outlived it"
        err = capfd.readouterr().err
        assert "did not stop on SIGINT: killed after 1s" in err
        assert "SIGTERM received" in err  # what it said meanwhile is shown, to tell why
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_second_ctrl_c_kills_a_hanging_serve_run_at_once(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    _, env = _stand_in(tmp_path)
    env["STAND_IN_HANGS"] = "1"
    process = ServeRun([str(tmp_path / "bin" / "python")], env=env, cwd=ROOT)
    pids: list[int] = []

    def press_ctrl_c_again() -> None:  # once stop() has sent its SIGINT, so handles ours
        noted = Path(env["STAND_IN_PIDS"] + ".sigint")
        deadline = time.monotonic() + 20
        while not noted.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if noted.exists():
            os.kill(os.getpid(), signal.SIGINT)

    try:
        pids = _wait_for_pids(Path(env["STAND_IN_PIDS"]), process)
        presser = threading.Thread(target=press_ctrl_c_again)
        presser.start()
        started = time.monotonic()
        stop(process, timeout_s=30, grace_s=30)
        presser.join()
        assert time.monotonic() - started < 10
        assert process.returncode == -signal.SIGKILL
        assert not _left_alive(pids), "its process group outlived it"
        err = capfd.readouterr().err
        assert "serve run killed on a second Ctrl-C" in err and "SIGTERM received" not in err
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

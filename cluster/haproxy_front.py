"""HAProxy for Serve's HAProxy mode, adding the client's address to every request it forwards.

Ray Serve (``RAY_SERVE_ENABLE_HA_PROXY=1``) writes HAProxy's configuration itself and runs the
binary named by ``RAY_SERVE_HAPROXY_BINARY_PATH``. Its configuration has no ``option
forwardfor``: every request then reaches the ingress replicas from HAProxy's address, and every
anonymous client would share one per-IP rate-limit bucket. ``recserve serve`` points that
variable at a script that runs this module with the real binary::

    python -m cluster.haproxy_front /usr/sbin/haproxy -db -f /tmp/haproxy-serve/haproxy.cfg ...

Before each start (and each reload: Ray starts a new process with ``-sf``) the configuration is
given ``option forwardfor`` in its ``defaults`` section, in place, under the lock Ray takes to
write it (so the command line still names Ray's own file, which is how Ray recognises its
processes), and the real binary replaces this process. The ingress believes the header only
from ``RECSERVE_TRUSTED_PROXIES``, which ``recserve serve`` extends with the loopback addresses
HAProxy connects from on one machine (``graph_api.clients``).
"""

from __future__ import annotations

import fcntl
import itertools
import os
import sys
from pathlib import Path

FORWARDFOR = "    option forwardfor"


def with_forwardfor(config: str) -> str:
    """``config`` with ``option forwardfor`` as the first line of its ``defaults`` section (as
    it was when that section already has it, or has none)."""
    lines = config.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.strip() != "defaults":
            continue
        section = []
        for following in lines[index + 1 :]:
            if following[:1] not in (" ", "\t", "\n", "#") and following.strip():
                break
            section.append(following.strip())
        if "option forwardfor" in section:
            return config
        lines.insert(index + 1, FORWARDFOR + "\n")
        return "".join(lines)
    return config


def config_path(args: list[str]) -> Path | None:
    """The file after HAProxy's first ``-f``."""
    for flag, value in itertools.pairwise(args):
        if flag == "-f":
            return Path(value)
    return None


def patch(path: Path) -> None:
    """Add the option to the file in place, under the lock Ray writes it with."""
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            text = path.read_text()
            patched = with_forwardfor(text)
            if patched != text:
                path.write_text(patched)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit("usage: python -m cluster.haproxy_front HAPROXY [haproxy args]")
    binary, args = argv[1], argv[2:]
    path = config_path(args)
    if path is not None and path.is_file():
        patch(path)
    os.execv(binary, [binary, *args])


if __name__ == "__main__":
    main(sys.argv)

"""``serve run``, as ``recserve serve`` runs it: the same command (``ray.serve.scripts``), except
that the local Ray it starts when no cluster is given (no ``RAY_ADDRESS``) comes without the
dashboard's web modules unless ``RECSERVE_RAY_DASHBOARD=1``. ``serve run`` starts Ray with
``ray.init``'s defaults, dashboard included: its head and module processes held about a fifth
of the laptop app's memory (docs/benchmarks.md), for a web UI and the REST API that ``serve
status`` and ``serve deploy`` use. ``recserve status`` asks Serve directly and works either way.

    python -m cluster.serve_run serve_config.yaml
"""

from __future__ import annotations

import os
import sys

DASHBOARD = "RECSERVE_RAY_DASHBOARD"


def main(argv: list[str]) -> None:
    if not os.environ.get("RAY_ADDRESS"):
        import ray
        from ray.serve._private.constants import SERVE_NAMESPACE

        # What `serve run` would call, plus the flag it does not take; it then finds Ray
        # initialised and only connects Serve to it.
        ray.init(namespace=SERVE_NAMESPACE, include_dashboard=os.environ.get(DASHBOARD) == "1")
    from ray.serve.scripts import cli

    cli.main(args=["run", *argv], prog_name="serve")


if __name__ == "__main__":
    main(sys.argv[1:])

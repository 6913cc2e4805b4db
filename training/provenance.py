"""Where an artifact's code came from: the installed package version and, inside a git checkout,
the commit (``code_version``), recorded in every model version's metadata.
"""

from __future__ import annotations

import subprocess
from functools import lru_cache
from importlib import metadata as importlib_metadata
from pathlib import Path

PACKAGE = "recserve"
_REPO_ROOT = Path(__file__).resolve().parent.parent


@lru_cache(maxsize=1)
def code_version() -> dict[str, str | None]:
    """The installed package version and, inside a git checkout, the commit it runs from."""
    try:
        package = importlib_metadata.version(PACKAGE)
    except importlib_metadata.PackageNotFoundError:
        package = None
    try:
        found = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=_REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        commit = (found.stdout.strip() or None) if found.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):  # no git binary, or not a checkout
        commit = None
    return {"package": package, "git_commit": commit}

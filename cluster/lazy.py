"""Modules loaded on first use, for the command line: ``recserve serve`` stays resident as the
supervisor of `serve run` for as long as the app runs, and every command is its own process, so
what a command does not use should not be imported (``cluster.operations`` brings SQLAlchemy,
numpy, scipy and the GraphQL schema: ~130 MiB and seconds of start-up)."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """``name``, imported when an attribute of it is first read (``importlib.util.LazyLoader``)."""
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module named {name!r}")
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module

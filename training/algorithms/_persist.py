"""Model artifacts as ``meta.json`` + ``arrays.npz``: readable anywhere, no pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from storage.errors import InvalidData, NotFound

META_FILE = "meta.json"
ARRAYS_FILE = "arrays.npz"
FORMAT_VERSION = 1
_SPARSE_PARTS = ("data", "indices", "indptr", "shape")

State = dict[str, np.ndarray | sp.csr_matrix]


def flatten(state: State) -> dict[str, np.ndarray]:
    """CSR matrices become four plain arrays under ``name.csr.<part>``."""
    flat: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if sp.issparse(value):
            csr = sp.csr_matrix(value)
            for part in _SPARSE_PARTS:
                flat[f"{key}.csr.{part}"] = np.asarray(getattr(csr, part))
        else:
            flat[key] = np.asarray(value)
    return flat


def unflatten(flat: dict[str, np.ndarray]) -> State:
    state: State = {}
    for key, value in flat.items():
        if ".csr." not in key:
            state[key] = value
        elif key.endswith(".csr.data"):
            name = key.removesuffix(".csr.data")
            parts = [flat[f"{name}.csr.{p}"] for p in _SPARSE_PARTS]
            state[name] = sp.csr_matrix((parts[0], parts[1], parts[2]), shape=tuple(parts[3]))
    return state


def write(directory: str | Path, meta: dict[str, Any], state: State) -> None:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    np.savez(path / ARRAYS_FILE, **flatten(state))
    # meta last: a directory with meta.json is a complete artifact
    (path / META_FILE).write_text(json.dumps({**meta, "format": FORMAT_VERSION}))


def read(directory: str | Path) -> tuple[dict[str, Any], State]:
    path = Path(directory)
    if not (path / META_FILE).exists():
        raise NotFound(f"no model artifact in {path}")
    meta = json.loads((path / META_FILE).read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise InvalidData(f"unsupported artifact format {meta.get('format')!r} in {path}")
    with np.load(path / ARRAYS_FILE, allow_pickle=False) as npz:
        flat = {key: npz[key] for key in npz.files}
    return meta, unflatten(flat)

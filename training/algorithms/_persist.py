"""Model artifacts as ``meta.json`` + one ``.npy`` file per array: readable anywhere, no pickle.

``read(..., mmap=True)`` maps the arrays instead of reading them: replicas on one node that load
the same files (``recommend.model_cache.ArtifactModelSource`` keeps one copy per node) share the
pages, and a model costs memory only for what it touches. Format 1 (one ``arrays.npz``) is
still read, fully.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from storage.errors import InvalidData, NotFound

META_FILE = "meta.json"
ARRAYS_FILE = "arrays.npz"  # format 1
ARRAYS_DIR = "arrays"
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
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
    (path / ARRAYS_DIR).mkdir(parents=True, exist_ok=True)
    for key, value in flatten(state).items():
        np.save(path / ARRAYS_DIR / f"{key}.npy", np.ascontiguousarray(value), allow_pickle=False)
    # meta last: a directory with meta.json is a complete artifact
    (path / META_FILE).write_text(json.dumps({**meta, "format": FORMAT_VERSION}))


def read(directory: str | Path, *, mmap: bool = False) -> tuple[dict[str, Any], State]:
    """The artifact's meta and state; ``mmap`` maps the arrays read-only (format 2)."""
    path = Path(directory)
    if not (path / META_FILE).exists():
        raise NotFound(f"no model artifact in {path}")
    meta = json.loads((path / META_FILE).read_text())
    if meta.get("format") not in READABLE_FORMATS:
        raise InvalidData(f"unsupported artifact format {meta.get('format')!r} in {path}")
    if meta["format"] == 1:
        with np.load(path / ARRAYS_FILE, allow_pickle=False) as npz:
            flat = {key: npz[key] for key in npz.files}
    else:
        mode = "r" if mmap else None
        flat = {
            file.name.removesuffix(".npy"): np.load(file, mmap_mode=mode, allow_pickle=False)
            for file in sorted((path / ARRAYS_DIR).glob("*.npy"))
        }
    return meta, unflatten(flat)


def nbytes(state: State) -> int:
    """Bytes of a model's arrays (mapped ones included: what it may occupy when touched)."""
    return sum(int(value.nbytes) for value in flatten(state).values())

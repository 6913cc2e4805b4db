"""Versioned model artifacts on any fsspec filesystem (a local directory by default).

Layout under the root URI::

    {tenant}/{algorithm}/_sequence          last version number handed out (never reused)
    {tenant}/{algorithm}/_pointer.json      {"current": "v000003", "history": ["v000001", ...]}
    {tenant}/{algorithm}/v000003/...        the model's files, as saved from a local directory
    {tenant}/{algorithm}/v000003/metadata.json
    {tenant}/{algorithm}/v000003/COMPLETE   written last: a version without it does not exist

Object stores have no atomic directory rename, so the marker is what makes a save atomic on
every backend: readers only ever see versions whose marker is present, and a crash mid-upload
leaves an invisible directory that the next save of that version replaces.

The API is synchronous (fsspec is); async callers wrap calls in ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from storage.errors import Conflict, InvalidData, NotFound, StorageError, Unavailable
from storage.settings import Settings

COMPLETE_MARKER = "COMPLETE"
METADATA_FILE = "metadata.json"
_POINTER_FILE = "_pointer.json"
_SEQUENCE_FILE = "_sequence"
_RESERVED = frozenset({COMPLETE_MARKER, METADATA_FILE})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_VERSION = re.compile(r"v(\d{6,})")


@contextmanager
def _io(what: str) -> Iterator[None]:
    """Turn filesystem errors into storage errors; a missing file means a missing artifact."""
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError as error:
        raise NotFound(f"{what} does not exist") from error
    except (OSError, TimeoutError) as error:
        raise Unavailable(f"artifact store failed on {what}: {error}") from error


def _check_name(kind: str, value: str) -> None:
    if not _NAME.fullmatch(value) or ".." in value:
        raise InvalidData(f"invalid {kind} {value!r}: letters, digits, '_', '.', '-' only")


def _version_number(version: str) -> int:
    match = _VERSION.fullmatch(version)
    if match is None:
        raise InvalidData(f"invalid version {version!r}: expected 'v' and at least 6 digits")
    return int(match.group(1))


class ArtifactStore:
    """Immutable, versioned artifacts per (tenant, algorithm), with a promotable current one."""

    def __init__(self, uri: str, **storage_options: Any) -> None:
        self._fs, self._root = fsspec.core.url_to_fs(uri, **storage_options)
        self._root = self._root.rstrip("/")
        # In-process only: two processes minting versions at the same instant may still race;
        # save() then refuses the second writer of an already complete version (Conflict).
        self._sequence_lock = threading.Lock()

    # -- versions -------------------------------------------------------------------------------

    def new_version(self, tenant: str, algorithm: str) -> str:
        """A fresh version id, greater than every id handed out before for this pair."""
        base = self._base(tenant, algorithm)
        sequence_path = posixpath.join(base, _SEQUENCE_FILE)
        with self._sequence_lock, _io(f"version sequence of {tenant}/{algorithm}"):
            last = int(self._read(sequence_path)) if self._fs.exists(sequence_path) else 0
            existing = [_version_number(v) for v in self._version_dirs(base)]
            number = max([last, *existing]) + 1
            self._write(sequence_path, str(number).encode())
        return f"v{number:06d}"

    def save(
        self,
        tenant: str,
        algorithm: str,
        version: str,
        local_dir: str | Path,
        metadata: dict[str, Any],
    ) -> dict[str, Any]:
        """Upload every file of ``local_dir`` as ``version``; returns the stored metadata."""
        target = self._version_path(tenant, algorithm, version)
        files = self._local_files(Path(local_dir))
        stored = {
            **metadata,
            "tenant": tenant,
            "algorithm": algorithm,
            "version": version,
            "created_at": metadata.get("created_at") or datetime.now(UTC).isoformat(),
            "files": {name: path.stat().st_size for name, path in files.items()},
        }
        try:  # before any upload, so bad metadata never leaves a half-written version behind
            encoded = json.dumps(stored).encode()
        except (TypeError, ValueError) as error:
            raise InvalidData(f"artifact metadata is not JSON-serialisable: {error}") from error
        with _io(f"artifact {tenant}/{algorithm}/{version}"):
            if self._fs.exists(posixpath.join(target, COMPLETE_MARKER)):
                raise Conflict(f"artifact {tenant}/{algorithm}/{version} already exists")
            if self._fs.exists(target):  # leftovers of an interrupted save
                self._fs.rm(target, recursive=True)
            for relative, source in files.items():
                destination = posixpath.join(target, relative)
                self._fs.makedirs(posixpath.dirname(destination), exist_ok=True)
                self._fs.put_file(str(source), destination)
            self._write(posixpath.join(target, METADATA_FILE), encoded)
            self._write(posixpath.join(target, COMPLETE_MARKER), stored["created_at"].encode())
        return stored

    def load(
        self, tenant: str, algorithm: str, version: str, local_dir: str | Path
    ) -> dict[str, Any]:
        """Download a complete version into ``local_dir``; returns its metadata."""
        stored = self.metadata(tenant, algorithm, version)
        source = self._version_path(tenant, algorithm, version)
        destination = Path(local_dir)
        with _io(f"artifact {tenant}/{algorithm}/{version}"):
            for relative in stored["files"]:
                local_path = destination / relative
                local_path.parent.mkdir(parents=True, exist_ok=True)
                self._fs.get_file(posixpath.join(source, relative), str(local_path))
        return stored

    def metadata(self, tenant: str, algorithm: str, version: str) -> dict[str, Any]:
        """The metadata of a complete version; NotFound for missing or half-written ones."""
        self._require_complete(tenant, algorithm, version)
        path = posixpath.join(self._version_path(tenant, algorithm, version), METADATA_FILE)
        with _io(f"artifact {tenant}/{algorithm}/{version}"):
            return json.loads(self._read(path))

    def list_versions(self, tenant: str, algorithm: str) -> list[str]:
        """Complete versions, oldest first."""
        base = self._base(tenant, algorithm)
        with _io(f"versions of {tenant}/{algorithm}"):
            markers = self._fs.glob(posixpath.join(base, "v*", COMPLETE_MARKER))
        versions = [posixpath.basename(posixpath.dirname(m)) for m in markers]
        return sorted((v for v in versions if _VERSION.fullmatch(v)), key=_version_number)

    def latest(self, tenant: str, algorithm: str) -> str | None:
        versions = self.list_versions(tenant, algorithm)
        return versions[-1] if versions else None

    def delete(self, tenant: str, algorithm: str, version: str) -> None:
        """Delete a version; the promoted (current) one is refused with Conflict."""
        self._require_complete(tenant, algorithm, version)
        pointer = self._read_pointer(tenant, algorithm)
        if pointer["current"] == version:
            raise Conflict(f"{tenant}/{algorithm}/{version} is the current version")
        target = self._version_path(tenant, algorithm, version)
        with _io(f"artifact {tenant}/{algorithm}/{version}"):
            # Marker first: the version vanishes for readers before any file is removed.
            self._fs.rm_file(posixpath.join(target, COMPLETE_MARKER))
            self._fs.rm(target, recursive=True)
        if version in pointer["history"]:
            pointer["history"] = [v for v in pointer["history"] if v != version]
            self._write_pointer(tenant, algorithm, pointer)

    # -- promotion ------------------------------------------------------------------------------

    def promote(self, tenant: str, algorithm: str, version: str) -> None:
        """Make ``version`` the one served; the previous current one is kept for rollback."""
        self._require_complete(tenant, algorithm, version)
        pointer = self._read_pointer(tenant, algorithm)
        if pointer["current"] == version:
            return
        if pointer["current"] is not None:
            pointer["history"].append(pointer["current"])
        pointer["current"] = version
        self._write_pointer(tenant, algorithm, pointer)

    def current(self, tenant: str, algorithm: str) -> str | None:
        """The promoted version, or None before the first promotion."""
        return self._read_pointer(tenant, algorithm)["current"]

    def rollback(self, tenant: str, algorithm: str) -> str:
        """Re-promote the previously promoted version (still existing); returns it."""
        pointer = self._read_pointer(tenant, algorithm)
        available = set(self.list_versions(tenant, algorithm))
        history = [v for v in pointer["history"] if v in available]
        if not history:
            raise NotFound(f"{tenant}/{algorithm} has no earlier promoted version")
        pointer["current"] = history.pop()
        pointer["history"] = history
        self._write_pointer(tenant, algorithm, pointer)
        return pointer["current"]

    # -- helpers --------------------------------------------------------------------------------

    def _base(self, tenant: str, algorithm: str) -> str:
        _check_name("tenant", tenant)
        _check_name("algorithm", algorithm)
        return posixpath.join(self._root, tenant, algorithm)

    def _version_path(self, tenant: str, algorithm: str, version: str) -> str:
        _version_number(version)
        return posixpath.join(self._base(tenant, algorithm), version)

    def _version_dirs(self, base: str) -> list[str]:
        """Every version directory, complete or not (used so numbers are never reused)."""
        if not self._fs.exists(base):
            return []
        names = [posixpath.basename(p.rstrip("/")) for p in self._fs.ls(base, detail=False)]
        return [n for n in names if _VERSION.fullmatch(n)]

    def _require_complete(self, tenant: str, algorithm: str, version: str) -> None:
        marker = posixpath.join(self._version_path(tenant, algorithm, version), COMPLETE_MARKER)
        with _io(f"artifact {tenant}/{algorithm}/{version}"):
            exists = self._fs.exists(marker)
        if not exists:
            raise NotFound(f"artifact {tenant}/{algorithm}/{version} does not exist")

    def _read_pointer(self, tenant: str, algorithm: str) -> dict[str, Any]:
        path = posixpath.join(self._base(tenant, algorithm), _POINTER_FILE)
        with _io(f"pointer of {tenant}/{algorithm}"):
            if not self._fs.exists(path):
                return {"current": None, "history": []}
            return json.loads(self._read(path))

    def _write_pointer(self, tenant: str, algorithm: str, pointer: dict[str, Any]) -> None:
        path = posixpath.join(self._base(tenant, algorithm), _POINTER_FILE)
        with _io(f"pointer of {tenant}/{algorithm}"):
            self._write(path, json.dumps(pointer).encode())

    def _read(self, path: str) -> bytes:
        return self._fs.cat_file(path)

    def _write(self, path: str, data: bytes) -> None:
        """Replace one small file; on a local disk through a rename so readers never see half."""
        self._fs.makedirs(posixpath.dirname(path), exist_ok=True)
        if isinstance(self._fs, LocalFileSystem):
            staging = f"{path}.{uuid.uuid4().hex}.tmp"
            Path(staging).write_bytes(data)
            os.replace(staging, path)
        else:
            self._fs.pipe_file(path, data)

    @staticmethod
    def _local_files(local_dir: Path) -> dict[str, Path]:
        if not local_dir.is_dir():
            raise InvalidData(f"{local_dir} is not a directory")
        files = {
            path.relative_to(local_dir).as_posix(): path
            for path in sorted(local_dir.rglob("*"))
            if path.is_file()
        }
        clashes = _RESERVED.intersection(files)
        if clashes:
            raise InvalidData(f"artifact files may not be named {sorted(clashes)}")
        return files


def create_artifact_store(settings: Settings) -> ArtifactStore:
    """The artifact store at ``settings.artifact_uri`` (a directory under data_dir by default)."""
    assert settings.artifact_uri is not None  # filled in by Settings' embedded defaults
    return ArtifactStore(settings.artifact_uri)

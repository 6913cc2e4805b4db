"""ArtifactStore over a local directory and fsspec's in-memory filesystem."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from storage.artifacts import COMPLETE_MARKER, ArtifactStore, create_artifact_store
from storage.errors import Conflict, InvalidData, NotFound, Unavailable
from storage.settings import Settings

T, ALGO = "tenant-a", "als"


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    if request.param == "local":
        yield ArtifactStore(str(tmp_path / "artifacts"))
        return
    # The memory filesystem is one process-wide tree: a unique root keeps tests apart.
    uri = f"memory://artifacts-{uuid.uuid4().hex}"
    yield ArtifactStore(uri)
    fs, root = fsspec.core.url_to_fs(uri)
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    (directory / "factors").mkdir(parents=True)
    (directory / "factors" / "items.npy").write_bytes(b"\x93NUMPY" + bytes(range(256)))
    (directory / "params.json").write_text('{"factors": 64}')
    return directory


def _save_new(store: ArtifactStore, model_dir: Path, tenant: str = T, **metrics: float) -> str:
    version = store.new_version(tenant, ALGO)
    store.save(tenant, ALGO, version, model_dir, {"params": {"factors": 64}, "metrics": metrics})
    return version


def test_versions_are_monotonic_and_never_reused(store: ArtifactStore, model_dir: Path) -> None:
    versions = [_save_new(store, model_dir) for _ in range(3)]
    assert versions == sorted(versions) and len(set(versions)) == 3
    store.delete(T, ALGO, versions[-1])
    fresh = store.new_version(T, ALGO)
    assert fresh > versions[-1]
    assert store.new_version(T, ALGO) > fresh  # reserved-but-unsaved numbers are not reused
    assert store.new_version("tenant-b", ALGO) == "v000001"


def test_save_and_load_round_trip(store: ArtifactStore, model_dir: Path, tmp_path: Path) -> None:
    version = _save_new(store, model_dir, ndcg=0.31)
    target = tmp_path / "downloaded"
    metadata = store.load(T, ALGO, version, target)
    for source in model_dir.rglob("*"):
        if source.is_file():
            copy = target / source.relative_to(model_dir)
            assert copy.read_bytes() == source.read_bytes()
    assert metadata["metrics"] == {"ndcg": 0.31}
    assert metadata["params"] == {"factors": 64}
    assert metadata["version"] == version and metadata["tenant"] == T
    assert set(metadata["files"]) == {"factors/items.npy", "params.json"}
    assert metadata["created_at"]
    assert store.metadata(T, ALGO, version) == metadata


def test_list_versions_and_latest(store: ArtifactStore, model_dir: Path) -> None:
    assert store.list_versions(T, ALGO) == []
    assert store.latest(T, ALGO) is None
    versions = [_save_new(store, model_dir) for _ in range(3)]
    assert store.list_versions(T, ALGO) == versions
    assert store.latest(T, ALGO) == versions[-1]
    assert store.list_versions("tenant-b", ALGO) == []


def test_half_written_version_is_invisible_and_replaced(
    store: ArtifactStore, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = _save_new(store, model_dir)
    broken = store.new_version(T, ALGO)
    real_put = store._fs.put_file
    uploads: list[str] = []

    def crash_after_first_file(source: str, destination: str, **kwargs: object) -> None:
        if uploads:
            raise ConnectionError("upload interrupted")
        uploads.append(destination)
        real_put(source, destination, **kwargs)

    monkeypatch.setattr(store._fs, "put_file", crash_after_first_file)
    with pytest.raises(Unavailable, match="interrupted"):
        store.save(T, ALGO, broken, model_dir, {})
    monkeypatch.setattr(store._fs, "put_file", real_put)

    assert store.list_versions(T, ALGO) == [good]
    assert store.latest(T, ALGO) == good
    for action in (store.metadata, store.promote):
        with pytest.raises(NotFound):
            action(T, ALGO, broken)
    with pytest.raises(NotFound):
        store.load(T, ALGO, broken, tmp_path / "nowhere")

    smaller = tmp_path / "retry"
    smaller.mkdir()
    (smaller / "only.bin").write_bytes(b"retry")
    store.save(T, ALGO, broken, smaller, {})  # the retry replaces the leftovers
    fetched = tmp_path / "fetched"
    store.load(T, ALGO, broken, fetched)
    assert sorted(p.name for p in fetched.rglob("*") if p.is_file()) == ["only.bin"]


def test_promote_current_and_rollback(store: ArtifactStore, model_dir: Path) -> None:
    v1, v2, v3 = (_save_new(store, model_dir) for _ in range(3))
    assert store.current(T, ALGO) is None
    with pytest.raises(NotFound):
        store.rollback(T, ALGO)
    for version in (v1, v2, v3):
        store.promote(T, ALGO, version)
    store.promote(T, ALGO, v3)  # re-promoting the current one is a no-op, not a history entry
    assert store.current(T, ALGO) == v3
    assert store.rollback(T, ALGO) == v2
    assert store.current(T, ALGO) == v2
    assert store.rollback(T, ALGO) == v1
    with pytest.raises(NotFound):
        store.rollback(T, ALGO)
    assert store.current(T, ALGO) == v1
    assert store.current("tenant-b", ALGO) is None


def test_rollback_skips_deleted_versions(store: ArtifactStore, model_dir: Path) -> None:
    v1, v2, v3 = (_save_new(store, model_dir) for _ in range(3))
    for version in (v1, v2, v3):
        store.promote(T, ALGO, version)
    store.delete(T, ALGO, v2)
    assert store.rollback(T, ALGO) == v1


def test_delete_refuses_current_and_removes_others(store: ArtifactStore, model_dir: Path) -> None:
    v1, v2 = _save_new(store, model_dir), _save_new(store, model_dir)
    store.promote(T, ALGO, v2)
    with pytest.raises(Conflict):
        store.delete(T, ALGO, v2)
    store.delete(T, ALGO, v1)
    assert store.list_versions(T, ALGO) == [v2]
    with pytest.raises(NotFound):
        store.delete(T, ALGO, v1)


def test_saving_an_existing_version_conflicts(store: ArtifactStore, model_dir: Path) -> None:
    version = _save_new(store, model_dir)
    with pytest.raises(Conflict):
        store.save(T, ALGO, version, model_dir, {})


def test_missing_and_invalid_addresses(store: ArtifactStore, model_dir: Path, tmp_path) -> None:
    with pytest.raises(NotFound):
        store.metadata(T, ALGO, "v000042")
    with pytest.raises(NotFound):
        store.load("nobody", ALGO, "v000001", tmp_path / "x")
    with pytest.raises(InvalidData):
        store.new_version("../escape", ALGO)
    with pytest.raises(InvalidData):
        store.metadata(T, ALGO, "latest")
    with pytest.raises(InvalidData):
        store.save(T, ALGO, "v000001", tmp_path / "does-not-exist", {})
    with pytest.raises(InvalidData):
        store.save(T, ALGO, store.new_version(T, ALGO), model_dir, {"bad": object()})
    (model_dir / COMPLETE_MARKER).write_text("forged")
    with pytest.raises(InvalidData):
        store.save(T, ALGO, store.new_version(T, ALGO), model_dir, {})
    assert store.list_versions(T, ALGO) == []


def test_local_store_leaves_no_staging_files(tmp_path: Path, model_dir: Path) -> None:
    root = tmp_path / "artifacts"
    store = ArtifactStore(str(root))
    store.promote(T, ALGO, _save_new(store, model_dir))
    assert not list(root.rglob("*.tmp"))


def test_factory_uses_settings_uri(tmp_path: Path) -> None:
    store = create_artifact_store(Settings(data_dir=tmp_path))
    version = store.new_version(T, ALGO)
    assert (tmp_path / "artifacts" / T / ALGO).is_dir()
    assert version == "v000001"

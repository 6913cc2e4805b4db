from __future__ import annotations

from pathlib import Path

import pytest

from storage.settings import Settings, UnsafeSettingsError


def test_embedded_defaults_live_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/recserve.db"
    assert settings.artifact_uri == str(tmp_path.resolve() / "artifacts")
    assert settings.qdrant_path == tmp_path.resolve() / "qdrant"
    assert settings.redis_url is None and settings.qdrant_url is None
    assert settings.uses_dev_jwt_secret


def test_the_development_secret_is_shared_by_processes_of_one_data_dir(tmp_path: Path) -> None:
    first = Settings(data_dir=tmp_path).jwt_secret
    second = Settings(data_dir=tmp_path).jwt_secret
    elsewhere = Settings(data_dir=tmp_path / "other").jwt_secret
    assert first is not None and second is not None and elsewhere is not None
    assert first.get_secret_value() == second.get_secret_value()
    assert first.get_secret_value() != elsewhere.get_secret_value()
    assert len(first.get_secret_value()) >= 32


def test_environment_variables_use_the_recserve_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSERVE_REDIS_URL", "redis://cache:6379/0")
    monkeypatch.setenv("RECSERVE_DATABASE_URL", "postgresql+asyncpg://db/recserve")
    settings = Settings()
    assert settings.redis_url == "redis://cache:6379/0"
    assert settings.database_url == "postgresql+asyncpg://db/recserve"


def test_production_refuses_the_development_jwt_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECSERVE_JWT_SECRET", raising=False)
    with pytest.raises(UnsafeSettingsError):
        Settings(env="production")
    with pytest.raises(UnsafeSettingsError):
        Settings(env="production", jwt_secret="short")
    settings = Settings(env="production", jwt_secret="x" * 40)
    assert not settings.uses_dev_jwt_secret

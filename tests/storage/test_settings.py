from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import yaml

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
    settings = Settings(env="production", jwt_secret=secrets.token_urlsafe(48))
    assert not settings.uses_dev_jwt_secret


def _example_secrets() -> dict[str, str]:
    example = Path(__file__).resolve().parents[2] / "cluster" / "k8s" / "secrets.example.yaml"
    return yaml.safe_load(example.read_text())["stringData"]


@pytest.mark.parametrize(
    "weak",
    [
        "x" * 40,
        "changeme-changeme-changeme-changeme",
        "my-super-secret-jwt-key-for-production-2024",
        "abcdefghijklmnopqrstuvwxyz0123456789",
        "Ab1!" * 10,
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1234567890",
    ],
)
def test_production_refuses_placeholder_and_low_entropy_secrets(weak: str) -> None:
    with pytest.raises(UnsafeSettingsError):
        Settings(env="production", jwt_secret=weak)
    with pytest.raises(UnsafeSettingsError):
        Settings(env="production", jwt_secret=secrets.token_urlsafe(48), ops_token=weak)


def test_production_refuses_every_value_of_the_example_secret_file() -> None:
    values = _example_secrets()
    real = secrets.token_urlsafe(48)
    with pytest.raises(UnsafeSettingsError):
        Settings(env="production", jwt_secret=values["jwt-secret"])
    with pytest.raises(UnsafeSettingsError):
        Settings(env="production", jwt_secret=real, ops_token=values["ops-token"])
    with pytest.raises(UnsafeSettingsError, match="DATABASE_URL"):
        Settings(env="production", jwt_secret=real, database_url=values["database-url"])
    with pytest.raises(UnsafeSettingsError, match="REDIS_URL"):
        Settings(env="production", jwt_secret=real, redis_url="redis://:changeme@redis:6379/0")


def test_production_accepts_generated_secrets() -> None:
    for _ in range(200):
        settings = Settings(
            env="production",
            jwt_secret=secrets.token_urlsafe(48),
            ops_token=secrets.token_hex(16),
            database_url=f"postgresql+asyncpg://app:{secrets.token_hex(16)}@db/recserve",
        )
        assert not settings.uses_dev_jwt_secret
    # Development keeps accepting anything: the checks guard production only.
    assert Settings(env="development", jwt_secret="change-me").jwt_secret is not None

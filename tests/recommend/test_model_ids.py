"""The multiplexed model id names the algorithm, the tenant and the version: one format."""

from __future__ import annotations

import pytest

from recommend.model_cache import NearModels, model_id, split_model_id


@pytest.mark.parametrize(
    ("algorithm", "tenant", "version"),
    [
        ("ease", "acme", "v000001"),
        ("item_knn", "2b0c7c9e-4bd4-4d4b-9b8e-0f1f5f0b7a11", "v3"),
        # versions may hold ":" and "/" (labels like "ease=v1,als=v2" or paths): split once
        ("als", "t1", "2024-01-01T00:00:00"),
        ("svd", "t1", "runs/7:b"),
    ],
)
def test_a_model_id_splits_back_into_what_made_it(
    algorithm: str, tenant: str, version: str
) -> None:
    value = model_id(algorithm, tenant, version)
    assert value.startswith(f"{algorithm}/{tenant}:")
    assert split_model_id(value) == (algorithm, tenant, version)


def test_the_algorithm_keeps_ids_of_one_tenant_and_version_apart() -> None:
    ids = {model_id(a, "acme", "v1") for a in ("ease", "als", "popularity")}
    assert len(ids) == 3
    assert {split_model_id(i)[0] for i in ids} == {"ease", "als", "popularity"}
    # The combiner's near models use the same format.
    assert NearModels.key("ease", "acme", "v1") == model_id("ease", "acme", "v1")


@pytest.mark.parametrize(
    "value", ["acme:v1", "ease/acme", "ease/:v1", "/acme:v1", "ease/acme:", "", "ease:acme/v1"]
)
def test_a_malformed_model_id_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="algorithm/tenant:version"):
        split_model_id(value)


@pytest.mark.parametrize(
    ("algorithm", "tenant", "version"),
    [
        ("", "acme", "v1"),
        ("a/b", "acme", "v1"),
        ("ease", "ac:me", "v1"),
        ("ease", "a/b", "v1"),
        ("ease", "", "v1"),
        ("ease", "acme", ""),
    ],
)
def test_a_model_id_refuses_parts_it_could_not_split_back(
    algorithm: str, tenant: str, version: str
) -> None:
    with pytest.raises(ValueError):
        model_id(algorithm, tenant, version)

"""What single algorithms promise beyond the shared contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from storage.errors import InvalidData, NotFound
from tests.training.test_algorithms_contract import COLD, catalogue, cluster_of, planted
from training.algorithms import SVD, Content, ItemKNN, Recommender, create, load
from training.data import SECONDS_PER_DAY, InteractionMatrix, ItemInfo


def test_item_knn_explains_with_the_strongest_history_item() -> None:
    model = create("item_knn", {"neighbours": 10}).fit(planted())
    assert isinstance(model, ItemKNN)
    item, _ = model.recommend("ub0", k=1)[0]
    reason = model.because("ub0", item)
    data = planted()
    seen = {str(data.item_ids[j]) for j in data.matrix[data.user_index("ub0")].indices}
    assert reason in seen and cluster_of(reason) == "b"
    assert model.because(["c-1", "c-2"], "c-3") in {"c-1", "c-2"}
    assert model.because("nobody", item) is None
    assert model.because("ub0", "no-such-item") is None


def test_content_recommends_cold_items_and_exports_vectors() -> None:
    model = create("content").fit(planted())
    assert isinstance(model, Content)
    assert COLD in [i for i, _ in model.recommend("ua0", k=5)]
    assert model.similar_items(COLD, k=3)[0][0].startswith("a-")
    vectors = model.item_vectors()
    assert vectors.dtype == np.float32 and vectors.shape[0] == model.n_items
    assert 1 <= vectors.shape[1] <= 64
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def _content_on(items: list[ItemInfo], tmp_path: Path) -> Content:
    """Content fitted on ``items`` (u0 touched the first, u1 the last), saved and reloaded."""
    rows = [("u0", items[0].id, "view", None, 0.0), ("u1", items[-1].id, "view", None, 0.0)]
    create("content").fit(InteractionMatrix.from_interactions(rows, items=items)).save(tmp_path)
    model = load(tmp_path)
    assert isinstance(model, Content)
    return model


@pytest.mark.parametrize(
    "items",
    [
        [ItemInfo(id="x"), ItemInfo(id="y"), ItemInfo(id="z")],
        [ItemInfo(id="x", title="A"), ItemInfo(id="y", title="7"), ItemInfo(id="z", title="#")],
        [ItemInfo(id="x")],
    ],
    ids=["no-text-no-category", "only-one-letter-words", "single-item"],
)
def test_content_without_any_features_fits_and_recommends_nothing(
    items: list[ItemInfo], tmp_path: Path
) -> None:
    model = _content_on(items, tmp_path)
    assert model.recommend("u0", k=5) == []
    assert model.recommend("u0", k=5, exclude_seen=False) == []
    assert model.recommend("newcomer", history=[items[0].id]) == []
    assert all(model.similar_items(item.id) == [] for item in items)
    assert model.item_vectors().shape == (len(items), 0)


@pytest.mark.parametrize(
    "features",
    [
        {"a": {"title": "red running shoe"}, "b": {"title": "blue garden hose"}},
        {"a": {"category": "shoes"}, "b": {"category": "garden"}},
    ],
    ids=["text-only", "category-only"],
)
def test_content_item_without_features_is_similar_to_nothing(
    features: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    items = [ItemInfo(id=f"{kind}{n}", **features[kind]) for n in range(2) for kind in "ab"]
    items.append(ItemInfo(id="blank"))  # u1 touched only this one
    model = _content_on(items, tmp_path)
    recs = model.recommend("u0", k=10)  # a0's twin first; the unrelated items rank, the blank not
    assert recs[0] == ("a1", pytest.approx(1.0))
    assert sorted(item for item, _ in recs) == ["a1", "b0", "b1"]
    assert [item for item, _ in model.similar_items("a0", k=10)] == ["a1", "b0", "b1"]
    assert model.similar_items("blank") == []
    assert model.recommend("u1") == [] and model.recommend("x", history=["blank"]) == []
    vectors = model.item_vectors()
    assert vectors.shape[0] == len(items) and not vectors[-1].any()
    assert np.allclose(np.linalg.norm(vectors[:-1], axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[2] == pytest.approx(1.0) and abs(vectors[0] @ vectors[1]) < 1e-6
    single = _content_on([ItemInfo(id="only", category="shoes")], tmp_path / "single")
    assert single.recommend("u0", exclude_seen=False) == [("only", 1.0)]
    assert single.item_vectors().shape == (1, 1)


def test_svd_predicts_clipped_ratings_that_follow_the_clusters() -> None:
    model = create("svd", {"factors": 4, "epochs": 40, "batch_size": 64}, seed=1).fit(planted())
    assert isinstance(model, SVD)
    own, other = model.predict(["ua0", "ua0"], ["a-9", "b-9"])
    assert own > other
    extreme = model.predict(["ua0"] * 3, ["a-1", "nope", "b-1"])
    assert np.all((extreme >= 0.5) & (extreme <= 5.0))
    unknown = model.predict(["nobody"], ["zzz"])
    assert unknown[0] == pytest.approx(np.clip(model.global_mean, 0.5, 5.0))


def test_trending_prefers_recent_activity_over_old_volume() -> None:
    now = 1_700_000_000.0
    old = [(f"u{n}", "classic", "view", None, now - 60 * SECONDS_PER_DAY) for n in range(10)]
    new = [(f"u{n}", "viral", "view", None, now - 0.5 * SECONDS_PER_DAY) for n in range(3)]
    data = InteractionMatrix.from_interactions(old + new)
    trending = create("trending", {"half_life_days": 7.0}).fit(data)
    popular = create("popularity").fit(data)
    assert trending.recommend("u5", k=2, exclude_seen=False)[0][0] == "viral"
    assert popular.recommend("u5", k=2, exclude_seen=False)[0][0] == "classic"


def test_popularity_ignores_dislikes() -> None:
    rows = [(f"u{n}", "hated", "dislike", None, 0.0) for n in range(5)]
    rows += [("u0", "liked", "like", None, 0.0)]
    model = create("popularity").fit(InteractionMatrix.from_interactions(rows))
    assert model.recommend("u1", k=1) == [("liked", 1.0)]


def test_registry_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidData, match="unknown algorithm"):
        create("nope")
    with pytest.raises(NotFound):
        load(tmp_path / "missing")
    create("popularity").fit(planted()).save(tmp_path / "pop")
    with pytest.raises(InvalidData):
        ItemKNN.load(tmp_path / "pop")
    assert type(Recommender.load(tmp_path / "pop")).__name__ == "Popularity"


def test_typed_config_rejects_bad_hyperparameters() -> None:
    with pytest.raises(ValueError):
        create("ease", {"regularization": -1})
    assert create("ease", {"regularization": 7}).config.regularization == 7.0


def test_items_argument_overrides_matrix_metadata() -> None:
    data = InteractionMatrix(planted().matrix, planted().user_ids, planted().item_ids)
    model = create("item_knn").fit(data, catalogue())
    assert model.categories[model.item_index("b-0")] == "b"

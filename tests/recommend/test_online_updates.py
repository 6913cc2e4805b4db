"""Online updates on the engine side: a fresh history moves a trained user's recommendations.

The request carries the user's newest item ids (interactions newer than the model included);
ALS recomputes the user vector from them, item-kNN and EASE score them directly. A user of
taste cluster "a" who just interacted with "b" items must be offered "b" items, and never the
ones just interacted with, with no retraining.
"""

from __future__ import annotations

import pytest

from recommend.scoring import EngineQuery, run_queries
from tests.deployments.fakes import synthetic_matrix
from training.algorithms import create

NEW_ITEMS = ("i20", "i21", "i22", "i23", "i24", "i25")


def _cluster_b(items: list[str]) -> list[str]:
    return [item for item in items if int(item[1:]) >= 20]


@pytest.mark.parametrize("algorithm", ["als", "item_knn", "ease"])
def test_new_interactions_fold_into_the_next_recommendations(algorithm: str) -> None:
    data = synthetic_matrix()
    model = create(algorithm).fit(data)
    trained = [str(model.item_ids[j]) for j in model.user_items[model.user_index("u1")].indices]
    before = EngineQuery("u1", 10, history=tuple(trained))
    after = EngineQuery("u1", 10, history=(*NEW_ITEMS, *trained))
    [old, new] = run_queries(model, [before, after])
    old_ids, new_ids = [item for item, _ in old], [item for item, _ in new]
    assert not _cluster_b(old_ids)  # the trained taste: cluster "a" only
    assert _cluster_b(new_ids)  # the fresh signal shows at once
    assert set(NEW_ITEMS).isdisjoint(new_ids) and set(trained).isdisjoint(new_ids)

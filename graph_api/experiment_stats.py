"""The statistics of an experiment: each variant's metric with a 95% interval, the verdict
(two-sided p-value of the best variant against the runner-up), and the bandit's traffic shares
(Thompson sampling).

Metrics are per list served: CTR is the share of lists with at least one attributed click,
CONVERSION the share with at least one conversion (both proportions: Wilson intervals and a
two-proportion z-test), REVENUE the mean revenue per list (a normal interval from the lists'
revenue variance and Welch's z-test).
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from storage.repositories.feedback import VariantOutcome

Z95 = 1.959963984540054
SIGNIFICANCE = 0.05
# Below this many lists per variant (or successes, for a proportion) the verdict warns.
MIN_LISTS = 100
MIN_SUCCESSES = 10
# The bandit never sends less than this share of the traffic to an arm: it keeps learning
# about arms that look worse, and a change in them is noticed.
MIN_EXPLORATION = 0.05
THOMPSON_DRAWS = 4000


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float


def successes(outcome: VariantOutcome, metric: str) -> int:
    return outcome.clicked_lists if metric == "ctr" else outcome.converted_lists


def estimate(outcome: VariantOutcome | None, metric: str) -> Estimate:
    if outcome is None or outcome.lists == 0:
        return Estimate(0.0, 0.0, 0.0)
    n = outcome.lists
    if metric == "revenue":
        mean = outcome.revenue / n
        spread = math.sqrt(_revenue_variance(outcome) / n)
        return Estimate(mean, mean - Z95 * spread, mean + Z95 * spread)
    p = successes(outcome, metric) / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half))


def _revenue_variance(outcome: VariantOutcome) -> float:
    n = outcome.lists
    if n < 2:
        return 0.0
    mean = outcome.revenue / n
    return max(0.0, (outcome.revenue_squares - n * mean * mean) / (n - 1))


def p_value(a: VariantOutcome, b: VariantOutcome, metric: str) -> float | None:
    """Two-sided p-value of the difference between two variants' metric."""
    if a.lists == 0 or b.lists == 0:
        return None
    if metric == "revenue":
        spread = math.sqrt(_revenue_variance(a) / a.lists + _revenue_variance(b) / b.lists)
        difference = a.revenue / a.lists - b.revenue / b.lists
    else:
        pa, pb = successes(a, metric) / a.lists, successes(b, metric) / b.lists
        pooled = (successes(a, metric) + successes(b, metric)) / (a.lists + b.lists)
        spread = math.sqrt(pooled * (1 - pooled) * (1 / a.lists + 1 / b.lists))
        difference = pa - pb
    if spread == 0:
        return 1.0 if difference == 0 else 0.0
    return math.erfc(abs(difference) / spread / math.sqrt(2))


@dataclass(frozen=True)
class Verdict:
    p_value: float | None
    leader: str | None
    winner: str | None  # the leader, once the difference is significant
    warning: str | None


def verdict(names: Sequence[str], outcomes: dict[str, VariantOutcome], metric: str) -> Verdict:
    served = [outcomes[name] for name in names if name in outcomes and outcomes[name].lists]
    warning = None
    small = [name for name in names if _too_small(outcomes.get(name), metric)]
    if small:
        warning = (
            f"too little data to trust yet ({', '.join(small)}): want at least {MIN_LISTS} "
            f"lists per variant"
            + ("" if metric == "revenue" else f" and {MIN_SUCCESSES} successes")
        )
    if len(served) < 2:
        return Verdict(None, served[0].variant if served else None, None, warning)
    ranked = sorted(served, key=lambda o: estimate(o, metric).value, reverse=True)
    p = p_value(ranked[0], ranked[1], metric)
    significant = p is not None and p < SIGNIFICANCE and not small
    return Verdict(p, ranked[0].variant, ranked[0].variant if significant else None, warning)


def _too_small(outcome: VariantOutcome | None, metric: str) -> bool:
    if outcome is None or outcome.lists < MIN_LISTS:
        return True
    return metric != "revenue" and successes(outcome, metric) < MIN_SUCCESSES


def thompson_shares(
    experiment_id: uuid.UUID,
    names: Sequence[str],
    outcomes: dict[str, VariantOutcome],
    metric: str,
) -> list[float]:
    """Each arm's share: the posterior probability that it is the best (Thompson sampling,
    estimated from ``THOMPSON_DRAWS`` draws), with ``MIN_EXPLORATION`` each at least.

    The draws are seeded by the experiment and the counts, so every replica that reads the same
    counts computes the same shares."""
    counts = [outcomes.get(name) for name in names]
    seed_text = f"{experiment_id}:" + ",".join(
        f"{o.lists}:{o.clicked_lists}:{o.converted_lists}:{o.revenue:.6f}" if o else "-"
        for o in counts
    )
    seed = int.from_bytes(hashlib.sha256(seed_text.encode()).digest()[:8], "big")
    rng = np.random.default_rng(seed)
    draws = np.empty((THOMPSON_DRAWS, len(names)))
    for column, outcome in enumerate(counts):
        n = outcome.lists if outcome else 0
        if metric == "revenue":
            mean = outcome.revenue / n if outcome and n else 0.0
            variance = _revenue_variance(outcome) if outcome else 0.0
            spread = math.sqrt((variance or 1.0) / max(n, 1))
            draws[:, column] = rng.normal(mean, spread, THOMPSON_DRAWS)
        else:
            wins = successes(outcome, metric) if outcome else 0
            draws[:, column] = rng.beta(wins + 1, n - wins + 1, THOMPSON_DRAWS)
    best = np.bincount(draws.argmax(axis=1), minlength=len(names)) / THOMPSON_DRAWS
    floor = min(MIN_EXPLORATION, 1.0 / len(names))
    return [floor + (1.0 - floor * len(names)) * float(share) for share in best]


def bucket(experiment_id: uuid.UUID, user_id: uuid.UUID) -> float:
    """A user's place in [0, 1) for an experiment: the same on every replica and restart."""
    digest = hashlib.sha256(f"{experiment_id}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def pick(names: Sequence[str], shares: Sequence[float], place: float) -> str:
    total = 0.0
    for name, share in zip(names, shares, strict=True):
        total += share
        if place < total:
            return name
    return names[-1]

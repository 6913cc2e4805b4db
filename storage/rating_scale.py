"""A tenant's rating scale: ratings arrive on it, are stored on one scale, and read back on it.

Ratings are stored from ``RATING_MIN`` to ``RATING_MAX`` (0.5 to 5 stars; the training code and
the database's check constraint know only that range). A tenant whose data rates 0 to 10, 1 to
100 or thumbs up/down names its scale once (``recserve tenant set-rating-scale``, or
``--rating-scale`` on ``tenant create`` and ``ingest file``); it is kept in the tenant's settings
(``{"rating_scale": "0:10"}``). Imports and ``rateItem`` take values on that scale, refuse
values outside it, and map them linearly onto the stored range, once; the API shows ratings on
the tenant's scale again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from storage.errors import InvalidData
from storage.models import RATING_MAX, RATING_MIN

SETTING = "rating_scale"  # the key in ``Tenant.settings``
THUMBS = "thumbs"
STARS = "0.5:5"


@dataclass(frozen=True)
class RatingScale:
    low: float
    high: float
    # only these values (thumbs: 0 down, 1 up; stars: halves), or None for any in the range
    step: float | None = None

    @classmethod
    def parse(cls, text: str) -> RatingScale:
        """``"0:10"``, ``"1:100"``, ``"0.5:5"`` (stars, the default) or ``"thumbs"``."""
        name = text.strip().lower()
        if name == THUMBS:
            return cls(0.0, 1.0, step=1.0)
        if name in ("", "stars", STARS):
            return STAR_SCALE
        low_text, sep, high_text = name.partition(":")
        try:
            low, high = float(low_text), float(high_text)
        except ValueError:
            low = high = math.nan
        if not sep or not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            raise InvalidData(
                f"rating scale {text!r}: give low:high (e.g. 0:10 or 1:100), stars or thumbs"
            )
        return cls(low, high)

    @classmethod
    def of_tenant(cls, settings: Mapping[str, Any] | None) -> RatingScale:
        return cls.parse(str((settings or {}).get(SETTING) or STARS))

    def __str__(self) -> str:
        if self == THUMBS_SCALE:
            return f"{THUMBS} (0 down, 1 up)"
        return f"{self.low:g}:{self.high:g}"

    @property
    def name(self) -> str:
        """What the tenant's settings keep."""
        return THUMBS if self == THUMBS_SCALE else f"{self.low:g}:{self.high:g}"

    def stored(self, value: float) -> float:
        """``value`` on this scale as the stored rating; InvalidData outside the scale."""
        if not math.isfinite(value) or not self.low <= value <= self.high:
            raise InvalidData(f"rating {value:g} is outside the tenant's rating scale {self}")
        if self.step is not None and not math.isclose(
            (value - self.low) / self.step, round((value - self.low) / self.step)
        ):
            raise InvalidData(
                f"rating {value:g} is not a value of the tenant's rating scale {self} "
                f"(steps of {self.step:g})"
            )
        share = (value - self.low) / (self.high - self.low)
        return RATING_MIN + share * (RATING_MAX - RATING_MIN)

    def shown(self, stored: float) -> float:
        """A stored rating (or an average of them) on this scale."""
        share = (stored - RATING_MIN) / (RATING_MAX - RATING_MIN)
        return self.low + share * (self.high - self.low)


STAR_SCALE = RatingScale(RATING_MIN, RATING_MAX)
THUMBS_SCALE = RatingScale(0.0, 1.0, step=1.0)

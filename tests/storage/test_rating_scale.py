"""A tenant's rating scale: parsed once, values on it stored on the 0.5-5 range and shown back."""

from __future__ import annotations

import pytest

from storage.errors import InvalidData
from storage.rating_scale import STAR_SCALE, THUMBS_SCALE, RatingScale


def test_scales_by_name() -> None:
    assert RatingScale.parse("0:10") == RatingScale(0.0, 10.0)
    assert RatingScale.parse(" 1:100 ") == RatingScale(1.0, 100.0)
    assert RatingScale.parse("thumbs") == THUMBS_SCALE
    assert RatingScale.parse("stars") == RatingScale.parse("0.5:5") == STAR_SCALE
    assert RatingScale.of_tenant(None) == RatingScale.of_tenant({}) == STAR_SCALE
    assert RatingScale.of_tenant({"rating_scale": "0:10"}).name == "0:10"
    for bad in ("10", "5:1", "a:b", "0:inf", "3:3", "0:10:20"):
        with pytest.raises(InvalidData, match="rating scale"):
            RatingScale.parse(bad)


def test_values_are_stored_on_the_star_range_and_shown_on_the_tenants() -> None:
    ten = RatingScale.parse("0:10")
    assert ten.stored(0) == 0.5 and ten.stored(10) == 5.0 and ten.stored(5) == pytest.approx(2.75)
    assert ten.shown(ten.stored(7.5)) == pytest.approx(7.5)
    percent = RatingScale.parse("1:100")
    assert percent.stored(100) == 5.0 and percent.shown(0.5) == 1.0
    assert STAR_SCALE.stored(3.7) == 3.7 and STAR_SCALE.shown(4.0) == 4.0
    assert THUMBS_SCALE.stored(1) == 5.0 and THUMBS_SCALE.stored(0) == 0.5


def test_values_off_the_scale_are_refused_with_the_scale_named() -> None:
    with pytest.raises(InvalidData, match="rating 11 is outside the tenant's rating scale 0:10"):
        RatingScale.parse("0:10").stored(11)
    with pytest.raises(InvalidData, match=r"outside the tenant's rating scale 0.5:5"):
        STAR_SCALE.stored(0)
    with pytest.raises(InvalidData, match="not a value of the tenant's rating scale thumbs"):
        THUMBS_SCALE.stored(0.5)
    with pytest.raises(InvalidData):
        RatingScale.parse("0:10").stored(float("nan"))

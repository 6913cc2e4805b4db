"""A user's own preferences: favourite and excluded categories, and free JSON for the client.

Stored in the ``users.preferences`` JSON column (there since the first migration) as
``{"favorite_categories": [...], "excluded_categories": [...], "data": {...}}``; read by the
recommendation step (``graph_api.recommendations``): a user with no history starts from their
favourite categories, and excluded categories never appear in their lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import strawberry
from strawberry.scalars import JSON

from graph_api import bounds
from graph_api.errors import BadUserInput


@dataclass(frozen=True)
class Preferences:
    favorite_categories: tuple[str, ...] = ()
    excluded_categories: tuple[str, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any] | None) -> Preferences:
        """From the column's value; anything unexpected in it reads as not set."""
        stored = stored if isinstance(stored, Mapping) else {}

        def names(key: str) -> tuple[str, ...]:
            values = stored.get(key)
            if not isinstance(values, list):
                return ()
            return tuple(v for v in values if isinstance(v, str))

        data = stored.get("data")
        return cls(
            favorite_categories=names("favorite_categories"),
            excluded_categories=names("excluded_categories"),
            data=dict(data) if isinstance(data, Mapping) else {},
        )

    def stored(self) -> dict[str, Any]:
        return {
            "favorite_categories": list(self.favorite_categories),
            "excluded_categories": list(self.excluded_categories),
            "data": dict(self.data),
        }


@strawberry.type
class UserPreferences:
    favorite_categories: list[str] = strawberry.field(
        description="A user with no history gets these categories' items first."
    )
    excluded_categories: list[str] = strawberry.field(
        description="Never recommended to this user, whatever the algorithm."
    )
    data: JSON = strawberry.field(description="Free JSON object kept for the client.")

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any] | None) -> UserPreferences:
        preferences = Preferences.from_stored(stored)
        return cls(
            favorite_categories=list(preferences.favorite_categories),
            excluded_categories=list(preferences.excluded_categories),
            data=preferences.data,
        )


@strawberry.input
class PreferencesInput:
    """Fields left out keep their value; an empty list or object clears one."""

    favorite_categories: list[str] | None = None
    excluded_categories: list[str] | None = None
    data: JSON | None = strawberry.field(
        default=None, description="A JSON object, bounded like item metadata (16 KiB, 16 levels)."
    )


def _categories(name: str, values: Sequence[str]) -> tuple[str, ...]:
    bounds.check_list(name, values, bounds.CATEGORIES)
    for value in values:
        bounds.check_text(name, value, bounds.CATEGORY_CHARS)
        if not value.strip():
            raise BadUserInput(f"{name} must not contain empty names.")
    return tuple(dict.fromkeys(values))


def updated(current: Preferences, changes: PreferencesInput) -> Preferences:
    """``current`` with the set fields of ``changes``, validated."""
    result = current
    if changes.favorite_categories is not None:
        favorite = _categories("favoriteCategories", changes.favorite_categories)
        result = replace(result, favorite_categories=favorite)
    if changes.excluded_categories is not None:
        excluded = _categories("excludedCategories", changes.excluded_categories)
        result = replace(result, excluded_categories=excluded)
    if changes.data is not None:
        if not isinstance(changes.data, dict):
            raise BadUserInput("preferences data must be a JSON object.")
        bounds.check_json("data", changes.data)
        result = replace(result, data=changes.data)
    both = set(result.favorite_categories) & set(result.excluded_categories)
    if both:
        raise BadUserInput(f"A category cannot be both favourite and excluded: {sorted(both)}.")
    return result

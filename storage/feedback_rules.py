"""Which of a tenant's interactions count as clicks and as conversions, and for how long after a
list is shown an interaction with one of its items is credited to it.

Kept in the tenant's settings (``{"feedback": {"click_types": [...], "conversion_types": [...],
"attribution_window_minutes": 30}}``), set by the ``updateFeedbackRules`` mutation. Defaults:
a view or a click is a click, a purchase a conversion (its ``interactionValue`` the revenue),
30 minutes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from storage.errors import InvalidData

SETTING = "feedback"  # the key in ``Tenant.settings``
DEFAULT_CLICKS = ("view", "click")
DEFAULT_CONVERSIONS = ("purchase",)
DEFAULT_WINDOW_MINUTES = 30
MAX_WINDOW_MINUTES = 7 * 24 * 60


@dataclass(frozen=True)
class FeedbackRules:
    click_types: frozenset[str] = frozenset(DEFAULT_CLICKS)
    conversion_types: frozenset[str] = frozenset(DEFAULT_CONVERSIONS)
    window_minutes: int = DEFAULT_WINDOW_MINUTES

    @classmethod
    def of_tenant(cls, settings: Mapping[str, Any] | None) -> FeedbackRules:
        stored = (settings or {}).get(SETTING) or {}
        return cls(
            frozenset(stored.get("click_types", DEFAULT_CLICKS)),
            frozenset(stored.get("conversion_types", DEFAULT_CONVERSIONS)),
            int(stored.get("attribution_window_minutes", DEFAULT_WINDOW_MINUTES)),
        )

    @classmethod
    def checked(
        cls,
        click_types: Iterable[str],
        conversion_types: Iterable[str],
        window_minutes: int,
        known_types: Iterable[str],
    ) -> FeedbackRules:
        known = frozenset(known_types)
        clicks, conversions = frozenset(click_types), frozenset(conversion_types)
        unknown = sorted((clicks | conversions) - known)
        if unknown:
            raise InvalidData(
                f"unknown interaction types {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        if not clicks and not conversions:
            raise InvalidData("name at least one click or conversion interaction type")
        if not 1 <= window_minutes <= MAX_WINDOW_MINUTES:
            raise InvalidData(
                f"the attribution window must be 1 to {MAX_WINDOW_MINUTES} minutes (7 days)"
            )
        return cls(clicks, conversions, window_minutes)

    def stored(self) -> dict[str, Any]:
        return {
            "click_types": sorted(self.click_types),
            "conversion_types": sorted(self.conversion_types),
            "attribution_window_minutes": self.window_minutes,
        }

    def counts(self, interaction_type: str) -> tuple[bool, bool]:
        """(a click, a conversion)."""
        return interaction_type in self.click_types, interaction_type in self.conversion_types

    @property
    def has_conversions(self) -> bool:
        return bool(self.conversion_types)

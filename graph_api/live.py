"""What the subscriptions stand on: the websocket handshake, tenant channels, event shapes.

Events travel through the cache's pub/sub (Redis on Redis / Redis Cluster, an in-process bus on
the embedded default), so the replica that commits a write need not be the one holding the
subscriber's socket. Every channel is derived from the verified tenant, never from client input.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.exceptions import ConnectionRejectionError
from strawberry.types.unset import UNSET, UnsetType

from graph_api.auth import Principal
from graph_api.context import RequestContext
from graph_api.http import GraphQLOverHTTP
from graph_api.types import Item
from storage.cache.base import Subscription
from storage.cache.channels import events_channel, items_channel, models_channel

logger = logging.getLogger(__name__)

# A burst of writes is answered with one recomputation: events this close together coalesce.
COALESCE_SECONDS = 0.002


class AuthenticatedGraphQLRouter(GraphQLOverHTTP):
    """Checks the token sent in ``connection_init`` before acknowledging a websocket.

    A token that fails verification closes the socket (4403, "Forbidden"); a socket without a
    token is acknowledged, and each operation on it answers UNAUTHENTICATED like over HTTP.
    """

    async def on_ws_connect(self, context: RequestContext) -> UnsetType | dict[str, object] | None:
        if context.credentials_rejected:
            logger.info("websocket refused: invalid token in connection_init")
            raise ConnectionRejectionError({"code": "UNAUTHENTICATED"})
        return UNSET


async def subscribe_tenant(
    context: RequestContext, principal: Principal, *, items: bool = False
) -> Subscription:
    """The tenant's write events and model promotions (and with ``items``, its item changes),
    listening when this returns."""
    tenant = principal.tenant_id
    channels = [events_channel(tenant), models_channel(tenant)]
    return await context.services.cache.subscribe(
        *channels, *([items_channel(tenant)] if items else [])
    )


async def drain(subscription: Subscription) -> list[dict[str, Any]]:
    """Whatever else is already queued: the caller recomputes once for all of it."""
    pending = []
    while (message := await subscription.get(wait_seconds=COALESCE_SECONDS)) is not None:
        pending.append(message[1])
    return pending


def is_write_event(event: Any) -> bool:
    return isinstance(event, dict) and event.get("kind") in {"interaction", "rating"}


def is_item_event(event: Any) -> bool:
    return isinstance(event, dict) and event.get("kind") == "item"


def touches_user(event: Any, user_id: uuid.UUID) -> bool:
    """A write of this user's, or a model promotion (which changes everyone's results)."""
    if is_write_event(event):
        return event.get("user_id") == str(user_id)
    return isinstance(event, dict) and "versions" in event


@strawberry.type
class ActivityEvent:
    """One committed interaction or rating. ``userId`` is shown to its owner and to admins."""

    kind: str
    item_id: uuid.UUID
    user_id: uuid.UUID | None
    interaction_type: str | None
    value: float | None
    occurred_at: datetime | None

    @classmethod
    def from_event(cls, event: dict[str, Any], viewer: Principal) -> ActivityEvent:
        owner = event.get("user_id")
        visible = viewer.is_admin or owner == str(viewer.user_id)
        at = event.get("at")
        return cls(
            kind=str(event["kind"]),
            item_id=uuid.UUID(str(event["item_id"])),
            user_id=uuid.UUID(owner) if visible and owner else None,
            interaction_type=event.get("interaction_type"),
            value=float(event["value"]) if event.get("value") is not None else None,
            occurred_at=datetime.fromisoformat(at) if isinstance(at, str) else None,
        )


@strawberry.enum
class ItemChange(Enum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


@strawberry.type
class ItemUpdate:
    """An item of the caller's tenant was created, updated or deleted."""

    change: ItemChange
    item_id: uuid.UUID
    item: Item | None = strawberry.field(description="The item as it is now; null once deleted.")
    occurred_at: datetime | None

    @classmethod
    def from_event(cls, event: dict[str, Any], item_id: uuid.UUID, row: Any) -> ItemUpdate:
        at = event.get("at")
        return cls(
            change=ItemChange(event["change"]),
            item_id=item_id,
            item=Item.from_row(row) if row is not None else None,
            occurred_at=datetime.fromisoformat(at) if isinstance(at, str) else None,
        )

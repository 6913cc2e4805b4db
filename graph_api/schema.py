"""The Strawberry schema: queries, mutations, one subscription, and the cross-cutting extensions.

Extensions (not resolvers) carry the limits, metrics and error masking; they are given as
factories so each operation gets fresh instances.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from functools import partial

import strawberry
from strawberry.extensions import MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry.scalars import JSON

from graph_api.context import Info
from graph_api.errors import ErrorMapping
from graph_api.metrics import MetricsExtension, MetricsRecorder
from graph_api.mutations import Mutation, events_channel
from graph_api.queries import Query

MAX_DEPTH = 10
MAX_ALIASES = 30
MAX_TOKENS = 5_000


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def tenant_events(self, info: Info, only_mine: bool = True) -> AsyncGenerator[JSON, None]:
        """Interactions and ratings recorded in the caller's tenant, as they are committed."""
        principal = await info.context.authorize()
        subscription = await info.context.services.cache.subscribe(
            events_channel(principal.tenant_id)
        )
        async with subscription:
            async for _channel, event in subscription:
                if only_mine and event.get("user_id") != str(principal.user_id):
                    continue
                yield event
                await asyncio.sleep(0)


def build_schema(metrics: MetricsRecorder) -> strawberry.Schema:
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=[
            partial(QueryDepthLimiter, max_depth=MAX_DEPTH),
            partial(MaxAliasesLimiter, max_alias_count=MAX_ALIASES),
            partial(MaxTokensLimiter, max_token_count=MAX_TOKENS),
            partial(MetricsExtension, metrics),
            ErrorMapping,
        ],
    )

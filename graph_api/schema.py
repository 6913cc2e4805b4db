"""The Strawberry schema: queries, mutations, subscriptions, and the cross-cutting extensions.

Extensions (not resolvers) carry the limits, metrics and error masking; they are given as
factories so each operation gets fresh instances.
"""

from __future__ import annotations

from functools import partial

import strawberry
from strawberry.extensions import MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter

from graph_api.errors import ErrorMapping
from graph_api.limits import RequestLimits
from graph_api.metrics import MetricsExtension, MetricsRecorder
from graph_api.mutations import Mutation
from graph_api.queries import Query
from graph_api.subscriptions import Subscription

MAX_DEPTH = 10
MAX_ALIASES = 30
MAX_TOKENS = 5_000


def build_schema(metrics: MetricsRecorder) -> strawberry.Schema:
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=[
            partial(QueryDepthLimiter, max_depth=MAX_DEPTH),
            partial(MaxAliasesLimiter, max_alias_count=MAX_ALIASES),
            partial(MaxTokensLimiter, max_token_count=MAX_TOKENS),
            RequestLimits,
            partial(MetricsExtension, metrics),
            ErrorMapping,
        ],
    )

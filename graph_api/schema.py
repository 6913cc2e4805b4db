"""The Strawberry schema: queries, mutations, subscriptions, and the cross-cutting extensions.

Extensions (not resolvers) carry the limits, metrics and error masking; they are given as
factories so each operation gets fresh instances.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import partial
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaxTokensLimiter,
    ParserCache,
    ValidationCache,
)
from strawberry.extensions.max_aliases import create_validator as alias_rule
from strawberry.extensions.query_depth_limiter import create_validator as depth_rule

from graph_api.errors import ErrorMapping
from graph_api.mutations import Mutation
from graph_api.queries import Query
from graph_api.query_limits import RequestLimits
from graph_api.request_metrics import MetricsExtension, MetricsRecorder
from graph_api.subscriptions import Subscription

MAX_DEPTH = 10
MAX_ALIASES = 30
MAX_TOKENS = 5_000
# Parsed and validated documents are kept for this many distinct query texts (LRU): clients
# send a handful of documents, so a repeated query skips both steps.
DOCUMENT_CACHE_SIZE = 256
# The depth and alias rules are built once: the validation cache keys on the rule classes, and
# the stock limiter extensions build new classes for every request (which would never hit).
LIMIT_RULES = [depth_rule(MAX_DEPTH, None, None), alias_rule(MAX_ALIASES)]


class DocumentCache(ParserCache):
    """Strawberry's LRU parse cache, minus one trap: a syntax error raised inside the parse hook
    escapes the error handling of the parse step. Here a document that does not parse is left
    to Strawberry, which parses it again and reports the error as a GraphQL error (LRU caches
    never hold exceptions, so only good documents are cached)."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        with contextlib.suppress(GraphQLError):
            context.graphql_document = self.cached_parse_document(
                context.query, **context.parse_options
            )
        yield


class QuietSchema(strawberry.Schema):
    """Errors are logged once, by ``graph_api.errors.classify``, and only the server's own
    faults. Strawberry's default logs every error with its traceback and chained causes: each
    refused registration, invalid query or rate limit, and (through a constraint error's
    cause) the SQL parameters of the failed insert, a password hash among them."""

    def process_errors(self, errors: Any, execution_context: Any = None) -> None:
        return None


def build_schema(metrics: MetricsRecorder, *, introspection: bool = True) -> strawberry.Schema:
    # Production hides the schema from strangers (RECSERVE_GRAPHQL_INTROSPECTION overrides).
    hidden = [] if introspection else [DisableIntrospection]
    return QuietSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=[
            partial(MaxTokensLimiter, max_token_count=MAX_TOKENS),
            partial(DocumentCache, maxsize=DOCUMENT_CACHE_SIZE),
            partial(AddValidationRules, LIMIT_RULES),
            partial(ValidationCache, maxsize=DOCUMENT_CACHE_SIZE),
            RequestLimits,
            partial(MetricsExtension, metrics),
            ErrorMapping,
            *hidden,
        ],
    )


def printed_sdl() -> str:
    """The schema in SDL, as checked in at the repository root in ``schema.graphql``
    (``recserve schema`` rewrites it; a test compares the two)."""
    return build_schema(MetricsRecorder()).as_str() + "\n"

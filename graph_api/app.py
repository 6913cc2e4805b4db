"""The FastAPI app: GraphQL at ``/graphql`` (HTTP + both websocket protocols) and ``/health``.

Request bodies are capped at ``settings.max_body_bytes`` before any route sees them; browsers
of ``settings.cors_origins`` (none by default) may call it cross-origin.

``create_app`` is what ``deployments`` calls on each Serve replica and what tests call
in-process. Resources passed in belong to the caller; the ones created here are disposed of
when the app shuts down.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from sqlalchemy import inspect
from starlette.requests import HTTPConnection
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL

from graph_api.accounts import AccountGuard, LoginThrottle
from graph_api.assignment import ExperimentDirectory
from graph_api.auth import TokenService
from graph_api.clients import ClientAddresses
from graph_api.console import mount_console
from graph_api.context import RequestContext, Services
from graph_api.fast_path import FastPath
from graph_api.feedback_recorder import FeedbackRecorder
from graph_api.http import BodySizeLimit
from graph_api.live import AuthenticatedGraphQLRouter
from graph_api.observability import mount_observability
from graph_api.quotas import TenantQuotas
from graph_api.ratelimit import RateLimiter, SubscriptionSlots
from graph_api.request_metrics import MetricsRecorder
from graph_api.result_cache import ResultCache
from graph_api.schema import LIMIT_RULES, MAX_TOKENS, build_schema
from recommend.types import BackgroundWork, RecommendationService
from storage.cache import Cache, create_cache
from storage.db import Database, migrate
from storage.settings import Settings

logger = logging.getLogger(__name__)


async def database_is_empty(database: Database) -> bool:
    """True when Alembic never ran here, i.e. the schema must be created."""
    async with database.engine.connect() as connection:
        names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    return "alembic_version" not in names


def _lifespan(services: Services, owned: list[Any]) -> Any:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if await database_is_empty(services.database):
            logger.info("empty database: running migrations")
            await migrate(services.database.url)
        background = services.recommender
        if isinstance(background, BackgroundWork):
            await background.start_background(services.cache)
        if services.feedback is not None:
            await services.feedback.start()
        try:
            yield
        finally:
            if services.feedback is not None:  # what it holds is written before the database goes
                await services.feedback.stop()
            if isinstance(background, BackgroundWork):
                await background.stop_background()
            for resource in owned:
                if isinstance(resource, Database):
                    await resource.dispose()
                else:
                    await resource.close()

    return lifespan


def create_app(
    *,
    recommender: RecommendationService,
    settings: Settings,
    database: Database | None = None,
    cache: Cache | None = None,
) -> FastAPI:
    owned: list[Any] = []
    if database is None:
        database = Database.from_settings(settings)
        owned.append(database)
    if cache is None:
        cache = create_cache(settings)
        owned.append(cache)
    metrics = MetricsRecorder()
    services = Services(
        settings=settings,
        database=database,
        cache=cache,
        recommender=recommender,
        tokens=TokenService(settings),
        metrics=metrics,
        rate_limiter=RateLimiter.from_settings(cache, settings),
        accounts=AccountGuard(cache, database, settings),
        login_throttle=LoginThrottle(cache, settings),
        quotas=TenantQuotas.from_settings(cache, settings),
        results=ResultCache(cache, ttl=float(settings.cache_default_ttl_seconds)),
        subscriptions=SubscriptionSlots(
            settings.max_subscriptions_per_connection, settings.max_subscriptions_per_user
        ),
        experiments=ExperimentDirectory(database),
        feedback=FeedbackRecorder(
            database,
            queue_size=settings.feedback_queue_size,
            flush_s=settings.feedback_flush_seconds,
            settle_s=settings.attribution_settle_seconds,
        ),
    )
    addresses = ClientAddresses(settings.trusted_proxies)

    async def get_context(connection: HTTPConnection) -> RequestContext:
        authorization = connection.headers.get("authorization")
        return RequestContext(services, authorization, addresses.of(connection))

    schema = build_schema(metrics, introspection=settings.introspection_enabled)
    router = AuthenticatedGraphQLRouter(
        schema,
        context_getter=get_context,
        graphql_ide="graphiql" if settings.introspection_enabled else None,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
    )
    if settings.graphql_fast_path:
        router.fast_path = FastPath(schema, validation_rules=LIMIT_RULES, max_tokens=MAX_TOKENS)
    app = FastAPI(title="Recserve", lifespan=_lifespan(services, owned))
    app.state.services = services
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        # Added last, so outermost: refusals (413, 429) carry the headers too, and a preflight
        # is answered before anything else runs. Tokens travel in a header, never a cookie.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Accept"],
            expose_headers=["Retry-After"],
            max_age=600,
        )
    router.install(app, "/graphql")

    mount_observability(app, services)
    mount_console(app)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, error: Exception) -> JSONResponse:
        # Last line of defence: the client gets no exception text and no traceback.
        logger.error("unhandled error", exc_info=error)
        return JSONResponse({"errors": [{"message": "Internal server error."}]}, 500)

    return app

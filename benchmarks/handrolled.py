"""The reference ``benchmarks/serve.py`` compares the product with: the recommender a team would
hand-roll instead. One FastAPI app under uvicorn, one process, one engine (``implicit``'s ALS),
no authentication, no cache, no Ray.

At startup it reads every tenant's interactions and ratings from the data dir's database (the
one ``RECSERVE_DATA_DIR`` / ``RECSERVE_DATABASE_URL`` point at, as ``prepare_tenant`` left it),
builds a user x item CSR matrix per tenant whose cells are the summed confidence of the user's
events (view 1, click 2, add to cart 4, purchase 8, like 4; a rating ``r`` of 5 stars weighs
``r / 5``; dislikes are left out), and fits one ALS per tenant (64 factors, 15 iterations,
regularization 0.05). Then it serves, each answer computed for its request
(``model.recommend(..., filter_already_liked_items=True)``; nothing is precomputed or cached):

- ``POST /graphql``: the body the benchmark's clients send, a ``recommendations`` query. Only
  what is needed is read: the user and tenant from the bearer token's payload, base64-decoded
  and *not verified* (``sub`` and ``tid``, the claims ``graph_api.auth`` issues), and the list
  length from the variables (``k`` or ``numRecommendations``; a literal ``numRecommendations:
  N`` in the query otherwise; 10 by default). The query text is not parsed beyond that, and
  every ``algorithm`` (the benchmark's ``ease`` phases too) is answered by the same ALS. The
  answer is shaped as the product's: ``data.recommendations`` with ``responseTimeMs`` and
  ``items[]`` of ``score`` and ``item { id title }`` (the tenant's item UUIDs). A user the model
  has not seen gets the tenant's most popular items (by number of users).
- ``GET /health``, ``/health/live``, ``/health/ready``: 200 once the models are fitted (the
  port only listens from then on).

    python -m benchmarks.handrolled --port 8001   # with RECSERVE_DATA_DIR set
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import re
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import orjson
import scipy.sparse as sp
from fastapi import FastAPI, Header
from implicit.cpu.als import AlternatingLeastSquares
from pydantic import BaseModel
from sqlalchemy import select
from threadpoolctl import threadpool_limits

from storage.db import Database
from storage.models import Interaction, Item, Rating, Tenant
from storage.settings import Settings

FACTORS, ITERATIONS, REGULARIZATION = 64, 15, 0.05
EVENT_WEIGHTS = {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0, "like": 4.0}
RATING_SCALE = 5.0  # stored ratings are 0.5 to 5 stars
DEFAULT_K, MAX_K = 10, 100
LITERAL_K = re.compile(r"numRecommendations\s*:\s*(\d+)")


@dataclass
class TenantModel:
    """One tenant's fitted ALS and what it takes to answer with it."""

    model: AlternatingLeastSquares
    user_items: sp.csr_matrix  # users x items, the confidence the model was fitted on
    user_index: dict[str, int]  # user UUID -> row
    item_ids: list[str]  # column -> item UUID
    titles: list[str]
    popular: np.ndarray  # columns, most users first

    def recommend(self, user: str | None, k: int) -> list[tuple[str, str, float]]:
        row = self.user_index.get(user) if user is not None else None
        k = min(k, len(self.item_ids))
        if row is None:
            columns = self.popular[:k]
            scores = np.linspace(1.0, 0.0, num=len(columns), endpoint=False)
        else:
            columns, scores = self.model.recommend(
                row, self.user_items[row], N=k, filter_already_liked_items=True
            )
        return [
            (self.item_ids[c], self.titles[c], float(s))
            for c, s in zip(columns.tolist(), scores.tolist(), strict=True)
        ]


async def load_events(settings: Settings) -> dict[str, tuple[list[tuple], list[tuple]]]:
    """``{tenant id: (items, events)}``: items as ``(id, title)``, events as ``(user, item,
    weight)``, for every tenant of the database."""
    database = Database.from_settings(settings)
    found: dict[str, tuple[list[tuple], list[tuple]]] = {}
    try:
        async with database.session() as session:
            tenants = (await session.scalars(select(Tenant.id))).all()
            for tenant in tenants:
                items = await session.execute(
                    select(Item.id, Item.title).where(Item.tenant_id == tenant, Item.is_active)
                )
                interactions = await session.execute(
                    select(Interaction.user_id, Interaction.item_id, Interaction.interaction_type)
                    .where(Interaction.tenant_id == tenant)
                )  # fmt: skip
                ratings = await session.execute(
                    select(Rating.user_id, Rating.item_id, Rating.rating).where(
                        Rating.tenant_id == tenant
                    )
                )
                events = [
                    (str(user), str(item), EVENT_WEIGHTS[kind])
                    for user, item, kind in interactions
                    if kind in EVENT_WEIGHTS
                ]
                events += [
                    (str(user), str(item), float(value) / RATING_SCALE)
                    for user, item, value in ratings
                ]
                found[str(tenant)] = ([(str(i), title) for i, title in items], events)
    finally:
        await database.dispose()
    return found


def fit(items: list[tuple[str, str]], events: list[tuple[str, str, float]]) -> TenantModel:
    item_index = {item: column for column, (item, _) in enumerate(items)}
    user_index: dict[str, int] = {}
    rows, columns, weights = [], [], []
    for user, item, weight in events:
        column = item_index.get(item)
        if column is None:  # an item since deactivated
            continue
        rows.append(user_index.setdefault(user, len(user_index)))
        columns.append(column)
        weights.append(weight)
    user_items = sp.csr_matrix(
        (np.asarray(weights, dtype=np.float32), (rows, columns)),
        shape=(len(user_index), len(items)),
    )  # duplicates (a user's several events on one item) add up
    user_items.sum_duplicates()
    # implicit parallelises over users itself; a BLAS pool besides would only contend
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=FACTORS, regularization=REGULARIZATION, iterations=ITERATIONS, random_state=42
        )
        if user_items.nnz:
            model.fit(user_items, show_progress=False)
    users_per_item = np.diff(user_items.tocsc().indptr)
    return TenantModel(
        model=model,
        user_items=user_items,
        user_index=user_index,
        item_ids=[item for item, _ in items],
        titles=[title for _, title in items],
        popular=np.argsort(-users_per_item, kind="stable"),
    )


def fit_all(settings: Settings) -> dict[str, TenantModel]:
    loaded = asyncio.run(load_events(settings))
    return {tenant: fit(items, events) for tenant, (items, events) in loaded.items() if items}


def token_claims(authorization: str | None) -> dict[str, Any]:
    """The JWT's payload, decoded but not verified: this service has no auth."""
    if not authorization or not authorization.lower().startswith("bearer "):
        return {}
    parts = authorization[7:].strip().split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = orjson.loads(payload)
    except ValueError:
        return {}
    return claims if isinstance(claims, dict) else {}


def list_length(body: GraphQLBody) -> int:
    variables = body.variables or {}
    k = variables.get("k", variables.get("numRecommendations"))
    if k is None and (literal := LITERAL_K.search(body.query)):
        k = literal.group(1)
    try:
        return max(1, min(MAX_K, int(k))) if k is not None else DEFAULT_K
    except (TypeError, ValueError):
        return DEFAULT_K


class GraphQLBody(BaseModel):
    """What a GraphQL client posts (FastAPI validates it, answering 422 otherwise)."""

    query: str
    variables: dict[str, Any] | None = None


def create_app(models: dict[str, TenantModel]) -> FastAPI:
    """Written as FastAPI's documentation teaches: a pydantic body, dicts returned."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/health")
    @app.get("/health/live")
    @app.get("/health/ready")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "tenants": len(models)}

    @app.post("/graphql")
    async def graphql(
        body: GraphQLBody, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        started = time.perf_counter()
        claims = token_claims(authorization)
        tenant = models.get(str(claims.get("tid")))
        if tenant is None:
            message = "unknown tenant (no bearer token, or not one of this service's)"
            return {"data": None, "errors": [{"message": message}]}
        user = claims.get("sub")
        try:
            user = str(uuid.UUID(str(user)))
        except ValueError:
            user = None
        found = tenant.recommend(user, list_length(body))
        items = [
            {"score": score, "item": {"id": item, "title": title}} for item, title, score in found
        ]
        took = (time.perf_counter() - started) * 1000.0
        return {"data": {"recommendations": {"responseTimeMs": took, "items": items}}}

    return app


def run(port: int, host: str = "127.0.0.1") -> None:
    """Fit every tenant's model, then serve on ``port`` until stopped."""
    import uvicorn

    # One BLAS thread for good, as implicit advises: a request's scoring is one small
    # matrix-vector product, which a pool of threads only slows down.
    threadpool_limits(1, "blas")
    started = time.perf_counter()
    models = fit_all(Settings())
    users = sum(len(m.user_index) for m in models.values())
    print(
        f"handrolled: {len(models)} tenants, {users} users fitted in "
        f"{time.perf_counter() - started:.1f}s",
        flush=True,
    )
    uvicorn.run(create_app(models), host=host, port=port, log_level="warning")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    run(args.port, args.host)


if __name__ == "__main__":
    main()

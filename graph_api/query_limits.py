"""Request limits applied before execution: query complexity, then the rate-limit charge.

Complexity estimates how many objects a query can make the server produce: each field costs 1
plus its children's complexity times its list size (``limit``, ``topK``,
``options.numRecommendations``, or the field's default). Operations above ``MAX_COMPLEXITY``
are rejected unexecuted, as are those deeper than the depth limit (``schema.py``); the same
rules hold for queries, mutations and subscriptions.

The rate-limit charge is the operation's price: each root field costs its price
(``recommendations`` and ``recommendationUpdates`` 5, ``similarItems`` 3, ``trainModel`` 10,
``promoteModel`` and ``rollbackModel`` 5, ``modelVersions`` 2, others 1; an alias repeats the
charge), and an engine-backed field nested anywhere below costs
its price once per parent it can run for (the product of the list sizes above it), so
``items(limit: 100) { similarItems }`` is 1 + 100 x 3. With a valid token it is charged to the
user and tenant windows, without one to the client address's window. Every operation is
charged, each one sent over a websocket included; a request that fails parsing, validation or
the complexity check is charged the base price. A refusal answers HTTP 429 with a
``Retry-After`` header and a ``RATE_LIMITED`` GraphQL error carrying ``retryAfter`` (seconds).

Root ``recommendations`` and ``recommendationUpdates`` fields are also charged, at the same
moment, to the tenant's hourly recommendations quota (``graph_api.quotas``); a refusal there is
the same 429 with a ``QUOTA_EXCEEDED`` error.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    value_from_ast_untyped,
)
from strawberry.extensions import SchemaExtension

from graph_api.errors import (
    GRAPHQL_VALIDATION_FAILED,
    ApiError,
    QuotaExceeded,
    RateLimited,
    final_error,
)
from graph_api.quotas import RECOMMENDATIONS

# Fields priced wherever they appear (they call the engines); other fields cost
# DEFAULT_FIELD_COST at the root and nothing nested.
FIELD_COSTS = {
    "recommendations": 5,
    "recommendationUpdates": 5,
    "similarItems": 3,
    "trainModel": 10,
    # They rewrite the served pointer and drop the tenant's cached results.
    "promoteModel": 5,
    "rollbackModel": 5,
    "modelVersions": 2,  # reads every stored version's metadata
}
DEFAULT_FIELD_COST = 1
# Root fields counted against the tenant's recommendations quota, one each.
QUOTA_FIELDS = frozenset({"recommendations", "recommendationUpdates"})
MAX_COMPLEXITY = 20_000
# field -> (argument path giving its list size, size when the argument is absent); the
# defaults are the resolvers' defaults, the maxima are enforced by the resolvers.
LIST_SIZES: dict[str, tuple[tuple[str, ...], int]] = {
    "users": (("limit",), 20),
    "items": (("limit",), 20),
    "interactions": (("limit",), 20),
    "ratings": (("limit",), 20),
    "trendingItems": (("limit",), 10),
    "similarItems": (("topK",), 10),
    "recommendations": (("options", "numRecommendations"), 10),
    "recommendationUpdates": (("numRecommendations",), 10),
    "trainingJobs": (("limit",), 20),
}

Fragments = dict[str, FragmentDefinitionNode]


class QueryTooComplex(ApiError):
    code = GRAPHQL_VALIDATION_FAILED


def select_operation(document: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name is None:
        return operations[0] if len(operations) == 1 else None
    return next((op for op in operations if op.name and op.name.value == name), None)


def _fields(selections: Any, fragments: Fragments) -> Iterator[FieldNode]:
    """The fields of a selection set, with fragment spreads and inline fragments flattened."""
    for selection in selections or ():
        if isinstance(selection, FieldNode):
            yield selection
        elif isinstance(selection, InlineFragmentNode):
            yield from _fields(selection.selection_set.selections, fragments)
        elif isinstance(selection, FragmentSpreadNode):
            fragment = fragments.get(selection.name.value)
            if fragment is not None:
                yield from _fields(fragment.selection_set.selections, fragments)


def operation_cost(
    operation: OperationDefinitionNode, fragments: Fragments, variables: dict[str, Any]
) -> int:
    """Rate-limit units: root fields at their price, nested engine-backed fields at their price
    times the number of parents they can run for (``__typename`` is free)."""
    return max(_cost(operation.selection_set.selections, fragments, variables, 1, True), 1)


def _cost(
    selections: Any, fragments: Fragments, variables: dict[str, Any], runs: int, root: bool
) -> int:
    total = 0
    for field in _fields(selections, fragments):
        name = field.name.value
        if name == "__typename":
            continue
        if root:
            total += FIELD_COSTS.get(name, DEFAULT_FIELD_COST)
        elif name in FIELD_COSTS:
            total += FIELD_COSTS[name] * runs
        if field.selection_set:
            inner_runs = runs * _list_size(field, variables, root)
            total += _cost(field.selection_set.selections, fragments, variables, inner_runs, False)
    return total


def quota_uses(operation: OperationDefinitionNode, fragments: Fragments) -> int:
    """How many root fields of the operation count against the recommendations quota."""
    fields = _fields(operation.selection_set.selections, fragments)
    return sum(1 for field in fields if field.name.value in QUOTA_FIELDS)


def _argument(field: FieldNode, path: tuple[str, ...], variables: dict[str, Any]) -> Any:
    node = next((a for a in field.arguments or () if a.name.value == path[0]), None)
    value = value_from_ast_untyped(node.value, variables) if node is not None else None
    for part in path[1:]:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _list_size(field: FieldNode, variables: dict[str, Any], root: bool) -> int:
    name = field.name.value
    if name not in LIST_SIZES:
        return 1
    path, default = LIST_SIZES[name]
    value = _argument(field, path, variables)
    if value is None and name == "items" and not root:
        return 1  # RecommendationResult.items: already sized by its parent
    # Variables are still raw JSON here: a non-finite number is refused later, by coercion.
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return max(int(value), 1)
    return default


def complexity(
    selections: Any, fragments: Fragments, variables: dict[str, Any], root: bool = True
) -> int:
    total = 0
    for field in _fields(selections, fragments):
        children = field.selection_set.selections if field.selection_set else ()
        inner = complexity(children, fragments, variables, root=False) if children else 0
        total += 1 + _list_size(field, variables, root) * inner
    return total


def _fragments(document: DocumentNode) -> Fragments:
    return {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}


class RequestLimits(SchemaExtension):
    """Rejects too-complex operations and charges the rate limits, both before execution; an
    operation that never got that far (it did not parse or validate) pays the base price."""

    def __init__(self) -> None:
        self._charged = False

    async def on_operation(self) -> AsyncIterator[None]:
        self._charged = False
        yield
        execution = self.execution_context
        result = execution.result
        if self._charged or not (execution.pre_execution_errors or (result and result.errors)):
            return
        try:
            await charge(execution.context, DEFAULT_FIELD_COST)
        except RateLimited as error:
            # ErrorMapping has passed already (hooks unwind in reverse): the error goes final.
            _refuse(execution, final_error(error), error)

    async def on_execute(self) -> AsyncIterator[None]:
        execution = self.execution_context
        document = execution.graphql_document
        operation = select_operation(document, execution.operation_name) if document else None
        if operation is not None:
            try:
                await self._check(operation, _fragments(document))
            except ApiError as error:
                if operation.operation == OperationType.SUBSCRIPTION:
                    raise  # a stream cannot be answered by setting a result: it ends with this
                _refuse(execution, GraphQLError(error.message, original_error=error), error)
        yield

    async def _check(self, operation: OperationDefinitionNode, fragments: Fragments) -> None:
        variables = self.execution_context.variables or {}
        score = complexity(operation.selection_set.selections, fragments, variables)
        if score > MAX_COMPLEXITY:
            raise QueryTooComplex(
                f"Query complexity {score} exceeds the maximum of {MAX_COMPLEXITY}.",
                complexity=score,
                maxComplexity=MAX_COMPLEXITY,
            )
        self._charged = True  # refused or admitted, this operation is settled
        cost = operation_cost(operation, fragments, variables)
        await charge(self.execution_context.context, cost, quota_uses(operation, fragments))


def _refuse(execution: Any, graphql_error: GraphQLError, error: ApiError) -> None:
    """Answer with ``error`` instead of executing (and HTTP 429 for a rate-limit refusal)."""
    execution.result = ExecutionResult(data=None, errors=[graphql_error])
    if isinstance(error, RateLimited | QuotaExceeded):
        _answer_429(execution.context, error)


async def charge(ctx: Any, cost: int, recommendations: int = 0) -> None:
    """Charge the caller's windows (user + tenant, or client address) for one operation, and
    ``recommendations`` uses to the tenant's quota (both in one round trip of wait).

    Every operation pays, so a websocket carrying many operations pays for each; the latest
    admission is what ``rateLimitStatus`` reports. A refusal by the rate limit takes back the
    quota charge: the operation does not run."""
    limiter = ctx.services.rate_limiter
    principal = ctx.principal
    if principal is None:
        await limiter.admit_ip(getattr(ctx, "client_address", "unknown"), cost)
        return
    if not recommendations:
        ctx.admission = await limiter.admit(principal, cost)
        return
    quotas = ctx.services.quotas
    admission, quota = await asyncio.gather(
        limiter.admit(principal, cost),
        quotas.charge(principal, RECOMMENDATIONS, recommendations),
        return_exceptions=True,
    )
    if isinstance(admission, BaseException):
        if quota is None:
            await quotas.refund(principal, RECOMMENDATIONS, recommendations)
        raise admission
    ctx.admission = admission
    if isinstance(quota, BaseException):
        raise quota


def _answer_429(ctx: Any, error: ApiError) -> None:
    response = getattr(ctx, "response", None)
    if response is not None and hasattr(response, "status_code"):
        response.status_code = 429
        response.headers["Retry-After"] = str(error.extensions["retryAfter"])

"""Request limits applied before execution: query complexity, then the rate-limit charge.

Complexity estimates how many objects a query can make the server produce: each field costs 1
plus its children's complexity times its list size (``limit``, ``topK``,
``options.numRecommendations``, or the field's default). Queries above ``MAX_COMPLEXITY`` are
rejected unexecuted, as are queries deeper than the depth limit (``schema.py``).

The rate-limit charge is the sum of the operation's root-field costs (``recommendations`` 5,
``similarItems`` 3, ``trainModel`` 10, others 1; an alias repeats the charge). With a valid
token it is charged to the user and tenant windows, without one to the client IP's window. A
refusal answers HTTP 429 with a ``Retry-After`` header and a ``RATE_LIMITED`` GraphQL error
carrying ``retryAfter`` (whole seconds). Subscriptions are charged on ``authorize()`` instead.
"""

from __future__ import annotations

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

from graph_api.errors import GRAPHQL_VALIDATION_FAILED, ApiError, RateLimited

FIELD_COSTS = {"recommendations": 5, "similarItems": 3, "trainModel": 10}
DEFAULT_FIELD_COST = 1
MAX_COMPLEXITY = 20_000
# field -> (argument path giving its list size, size when the argument is absent)
LIST_SIZES: dict[str, tuple[tuple[str, ...], int]] = {
    "users": (("limit",), 20),
    "items": (("limit",), 20),
    "trendingItems": (("limit",), 10),
    "similarItems": (("topK",), 10),
    "recommendations": (("options", "numRecommendations"), 10),
}
# Lists under a user with no size argument: counted as this many entries.
UNSIZED_LISTS = {"interactions": 10, "ratings": 10}

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


def operation_cost(operation: OperationDefinitionNode, fragments: Fragments) -> int:
    """Rate-limit units: the summed cost of the root fields (``__typename`` is free)."""
    names = [f.name.value for f in _fields(operation.selection_set.selections, fragments)]
    cost = sum(FIELD_COSTS.get(n, DEFAULT_FIELD_COST) for n in names if n != "__typename")
    return max(cost, 1)


def _argument(field: FieldNode, path: tuple[str, ...], variables: dict[str, Any]) -> Any:
    node = next((a for a in field.arguments or () if a.name.value == path[0]), None)
    value = value_from_ast_untyped(node.value, variables) if node is not None else None
    for part in path[1:]:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _list_size(field: FieldNode, variables: dict[str, Any], root: bool) -> int:
    name = field.name.value
    if name in UNSIZED_LISTS and not root:
        return UNSIZED_LISTS[name]
    if name not in LIST_SIZES:
        return 1
    path, default = LIST_SIZES[name]
    value = _argument(field, path, variables)
    if value is None and name == "items" and not root:
        return 1  # RecommendationResult.items: already sized by its parent
    # Variables are still raw JSON here: a non-finite number is refused later, by coercion.
    if isinstance(value, int | float) and math.isfinite(value):
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
    """Rejects too-complex operations and charges the rate limits, both before execution."""

    async def on_execute(self) -> AsyncIterator[None]:
        execution = self.execution_context
        document = execution.graphql_document
        operation = select_operation(document, execution.operation_name) if document else None
        if operation is not None and operation.operation != OperationType.SUBSCRIPTION:
            try:
                await self._check(operation, _fragments(document))
            except ApiError as error:
                execution.result = ExecutionResult(
                    data=None, errors=[GraphQLError(error.message, original_error=error)]
                )
                if isinstance(error, RateLimited):
                    _answer_429(execution.context, error)
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
        await charge(self.execution_context.context, operation_cost(operation, fragments))


async def charge(ctx: Any, cost: int) -> None:
    """Charge the caller's windows (user + tenant, or client IP) once for this request."""
    limiter = ctx.services.rate_limiter
    principal = ctx.principal
    if principal is not None:
        async with ctx._admission_lock:
            if ctx.admission is None:
                ctx.admission = await limiter.admit(principal, cost)
        return
    request = getattr(ctx, "request", None)
    client = getattr(request, "client", None)
    await limiter.admit_ip(client.host if client is not None else "unknown", cost)


def _answer_429(ctx: Any, error: RateLimited) -> None:
    response = getattr(ctx, "response", None)
    if response is not None and hasattr(response, "status_code"):
        response.status_code = 429
        response.headers["Retry-After"] = str(error.extensions["retryAfter"])

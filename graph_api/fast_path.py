"""``recommendations`` documents answered without GraphQL's executor.

Nearly every request a storefront sends is the same few ``recommendations`` documents with new
variables. For such a document Strawberry's parse and validation are cached already, but its
execution (a resolver call per field per item, extension hooks, result completion) cost more
CPU than the rest of a cache hit together (the single process's profile: about half of it).
Here an eligible document is planned once per query text and then answered directly: the same
admission (``query_limits.charge``: complexity, cost, recommendation quota), the same resolver
logic (``recommendations.recommend``: cache, engines, hydration, the impression), and the
answer projected from the ``RecommendationResult`` by walking the document's selection over the
schema's own types, each leaf serialized by its GraphQL type as graphql-core would.

A document is eligible when it is one ``query`` operation whose only root field is
``recommendations`` and whose selection reads fields only from what the answer carries: plain
fields and the two pure resolvers below, ``__typename``, no fragments or directives, no response
key twice in one selection. Everything else (a fragment, ``item { averageRating }`` whose value
comes from the database, a second root field, a document that does not parse or validate, a
variable that does not coerce, bad options, no token, a token that fails) goes the full way, as
does any request before anything was charged: it is answered, errors included, as before.
Errors after the charge are answered as the full path answers them (``graph_api.errors``).
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    get_named_type,
    is_leaf_type,
    parse,
    specified_rules,
    validate,
)
from graphql.execution.values import get_argument_values, get_variable_values
from starlette.responses import Response
from strawberry.types.arguments import convert_arguments

from graph_api.errors import ApiError, QuotaExceeded, RateLimited, final_error, rebuilt
from graph_api.http import APPLICATION_JSON, as_graphql_response_json, prefers_graphql_response_json
from graph_api.inputs import to_params
from graph_api.query_limits import MAX_COMPLEXITY, charge, complexity, operation_cost, quota_uses
from graph_api.recommendations import recommend, result_lookup
from graph_api.request_metrics import record_operation
from storage.logs import bind_request, update_request
from storage.tracing import tracer

ROOT_FIELD = "recommendations"
DEFINITION = "strawberry-definition"  # Strawberry's back-reference on every GraphQL field
# Resolvers that only rearrange what the answer holds (graph_api.types).
PURE_RESOLVERS = frozenset(
    {("RecommendationItem", "explanation"), ("RecommendationExplanation", "items")}
)
PLANS = 256  # query texts remembered (LRU), eligible or not


@dataclass(frozen=True)
class Plan:
    document: DocumentNode
    operation: OperationDefinitionNode
    field: FieldNode
    definition: GraphQLField
    key: str  # the root field's response key (its alias, if any)

    @property
    def name(self) -> str | None:
        return self.operation.name.value if self.operation.name else None


class FastPath:
    """Plans and answers eligible documents for one schema (one per app)."""

    def __init__(self, schema: Any, *, validation_rules: list[Any], max_tokens: int) -> None:
        self._strawberry = schema
        self._schema: GraphQLSchema = schema._schema
        self._rules = [*specified_rules, *validation_rules]
        self._max_tokens = max_tokens
        self._plans: OrderedDict[str, Plan | None] = OrderedDict()
        root = self._schema.query_type
        assert root is not None
        self._root = root

    def plan(self, query: str) -> Plan | None:
        """The plan of ``query``, or None when it is not eligible (remembered either way)."""
        if query in self._plans:
            self._plans.move_to_end(query)
            return self._plans[query]
        found = self._planned(query)
        self._plans[query] = found
        if len(self._plans) > PLANS:
            self._plans.popitem(last=False)
        return found

    def _planned(self, query: str) -> Plan | None:
        try:
            document = parse(query, max_tokens=self._max_tokens)
        except GraphQLError:
            return None
        if len(document.definitions) != 1 or validate(self._schema, document, self._rules):
            return None
        operation = document.definitions[0]
        if not isinstance(operation, OperationDefinitionNode):
            return None
        if operation.operation != OperationType.QUERY or operation.directives:
            return None
        selections = operation.selection_set.selections
        if len(selections) != 1 or not isinstance(selections[0], FieldNode):
            return None
        field = selections[0]
        if field.name.value != ROOT_FIELD or field.directives or field.selection_set is None:
            return None
        definition = self._root.fields[ROOT_FIELD]
        target = get_named_type(definition.type)
        if not isinstance(target, GraphQLObjectType):
            return None
        if not _eligible(field.selection_set, target):
            return None
        key = field.alias.value if field.alias else field.name.value
        return Plan(document, operation, field, definition, key)

    async def answer(self, body: Any, context: Any, accept: str | None) -> Response | None:
        """The response to this POST body, or None for the full path to answer it."""
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return None
        if body.get("extensions") or not isinstance(body.get("variables") or {}, dict):
            return None
        plan = self.plan(body["query"])
        if plan is None or body.get("operationName") not in (None, plan.name):
            return None
        variables = body.get("variables") or {}
        coerced, options = self._options(plan, variables)
        if not coerced or context.principal is None:
            return None  # bad input or no (good) token: answered, and charged, the full way
        try:
            params = to_params(options)
            params.validate(context.services.recommender.catalog)
        except ApiError:
            return None
        if params.min_rating is not None:  # its bound is read from the tenant (a failure there
            return None  # would come after the charge)
        fragments: dict[str, Any] = {}
        selections = plan.operation.selection_set.selections
        if complexity(selections, fragments, variables) > MAX_COMPLEXITY:
            return None
        return await self._run(plan, context, params, variables, fragments, accept)

    def _options(self, plan: Plan, variables: dict[str, Any]) -> tuple[bool, Any]:
        """(whether the variables coerced, the ``options`` argument or None)."""
        coerced = get_variable_values(
            self._schema, plan.operation.variable_definitions or (), variables
        )
        if isinstance(coerced, list):  # coercion errors: the full path reports them
            return False, None
        try:
            arguments = get_argument_values(plan.definition, plan.field, coerced)
        except GraphQLError:
            return False, None
        strawberry_field = plan.definition.extensions[DEFINITION]
        converted = convert_arguments(
            arguments,
            strawberry_field.arguments,
            scalar_registry=self._strawberry.schema_converter.scalar_registry,
            config=self._strawberry.config,
        )
        return True, converted.get("options")

    async def _run(
        self,
        plan: Plan,
        context: Any,
        params: Any,
        variables: dict[str, Any],
        fragments: dict[str, Any],
        accept: str | None,
    ) -> Response:
        started = time.perf_counter()
        errors: list[GraphQLError] = []
        status = 200
        headers: dict[str, str] = {}
        with (
            tracer().start_as_current_span("graphql operation") as span,
            bind_request(request_id=uuid.uuid4().hex[:16]),
        ):
            span.set_attribute("graphql.fast_path", True)
            payload: dict[str, Any]
            try:
                cost = operation_cost(plan.operation, fragments, variables)
                await charge(context, cost, quota_uses(plan.operation, fragments))
            except ApiError as error:  # refused before execution, as RequestLimits refuses
                errors.append(final_error(error))
                status = 429 if isinstance(error, RateLimited | QuotaExceeded) else 200
                payload = {"data": None, "errors": [e.formatted for e in errors]}
                if status == 429:
                    retry = error.extensions.get("retryAfter")
                    headers = {"Retry-After": str(retry)} if retry is not None else {}
            else:
                try:
                    lookup = result_lookup(context, params)
                    principal = await context.authorize(read_along=lookup)
                    result = await recommend(context, principal, params)
                    data = {plan.key: _complete(result, plan.definition.type, plan.field)}
                    payload = {"data": data}
                except Exception as error:  # a resolver's error, mapped as ErrorMapping does
                    located = GraphQLError(
                        str(error), nodes=[plan.field], path=[plan.key], original_error=error
                    )
                    errors.append(rebuilt(located))
                    payload = {"data": None, "errors": [e.formatted for e in errors]}
            label = context.services.metrics.names.label(_tenant(context), plan.name)
            span.set_attribute("graphql.operation.name", f"query:{label}")
            update_request(operation=f"query:{label}", tenant_id=_tenant(context))
        record_operation(
            context.services.metrics, started, "query", label, _tenant(context), errors
        )
        response = Response(
            orjson.dumps(payload), status_code=status, headers=headers, media_type=APPLICATION_JSON
        )
        return (
            as_graphql_response_json(response)
            if prefers_graphql_response_json(accept)
            else response
        )


def _tenant(context: Any) -> str | None:
    principal = context.principal
    return str(principal.tenant_id) if principal is not None else None


def _eligible(selection_set: SelectionSetNode, parent: GraphQLObjectType) -> bool:
    keys: set[str] = set()
    for selection in selection_set.selections:
        if not isinstance(selection, FieldNode) or selection.directives or selection.arguments:
            return False
        key = selection.alias.value if selection.alias else selection.name.value
        if key in keys:
            return False  # GraphQL merges such fields' selections; not worth planning
        keys.add(key)
        name = selection.name.value
        if name == "__typename":
            continue
        field = parent.fields.get(name)
        if field is None:
            return False
        definition = field.extensions.get(DEFINITION)
        if definition is None:
            return False
        if definition.base_resolver is not None and (parent.name, name) not in PURE_RESOLVERS:
            return False
        target = get_named_type(field.type)
        if is_leaf_type(target):
            if selection.selection_set is not None:
                return False
        elif isinstance(target, GraphQLObjectType) and selection.selection_set is not None:
            if not _eligible(selection.selection_set, target):
                return False
        else:
            return False  # interfaces and unions
    return True


def _complete(value: Any, kind: Any, node: FieldNode) -> Any:
    """``value`` as graphql-core completes it for a field of type ``kind`` selected by
    ``node``."""
    if isinstance(kind, GraphQLNonNull):
        if value is None:
            raise TypeError(f"Cannot return null for non-nullable field {node.name.value}.")
        return _complete(value, kind.of_type, node)
    if value is None:
        return None
    if isinstance(kind, GraphQLList):
        return [_complete(entry, kind.of_type, node) for entry in value]
    if is_leaf_type(kind):
        return kind.serialize(value)
    assert isinstance(kind, GraphQLObjectType) and node.selection_set is not None
    return _fields(value, kind, node.selection_set)


def _fields(value: Any, kind: GraphQLObjectType, selection_set: SelectionSetNode) -> dict:
    out: dict[str, Any] = {}
    for selection in selection_set.selections:
        assert isinstance(selection, FieldNode)
        key = selection.alias.value if selection.alias else selection.name.value
        if selection.name.value == "__typename":
            out[key] = kind.name
            continue
        field = kind.fields[selection.name.value]
        definition = field.extensions[DEFINITION]
        resolver = definition.base_resolver
        found = resolver(value) if resolver is not None else getattr(value, definition.python_name)
        out[key] = _complete(found, field.type, selection)
    return out

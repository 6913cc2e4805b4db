"""GraphQL errors with a stable ``extensions.code``, and the edge that maps everything else.

Resolvers raise ``ApiError`` subclasses (or let storage errors through); the ``ErrorMapping``
schema extension turns storage errors into their codes and masks anything unexpected as
``INTERNAL`` so no exception text or stack trace reaches a client::

    NotFound              -> NOT_FOUND
    Conflict, InvalidData -> BAD_USER_INPUT
    a variable's coercion -> BAD_USER_INPUT
    Unavailable           -> UNAVAILABLE ("Service temporarily unavailable, retry later."):
                             a backend (database, cache) is down; retrying later can succeed
    anything else         -> INTERNAL ("Internal server error.")
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, ClassVar

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from storage.errors import Conflict, InvalidData, NotFound, StorageError, Unavailable
from storage.tracing import current_trace_id

logger = logging.getLogger(__name__)

UNAUTHENTICATED = "UNAUTHENTICATED"
FORBIDDEN = "FORBIDDEN"
BAD_USER_INPUT = "BAD_USER_INPUT"
NOT_FOUND = "NOT_FOUND"
RATE_LIMITED = "RATE_LIMITED"
QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
INTERNAL = "INTERNAL"
UNAVAILABLE = "UNAVAILABLE"
# The server's faults, not the client's: these count against health and the error rate.
SERVER_FAULTS = frozenset({INTERNAL, UNAVAILABLE})
# Parse/validation failures (including the depth limit) come from graphql-core with no
# original error; they are the client's fault and keep their message.
GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"


class ApiError(Exception):
    """An error whose message is safe to show to the client."""

    code: ClassVar[str] = INTERNAL

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extensions = extensions


class Unauthenticated(ApiError):
    code = UNAUTHENTICATED


class Forbidden(ApiError):
    code = FORBIDDEN


class BadUserInput(ApiError):
    code = BAD_USER_INPUT


class ObjectNotFound(ApiError):
    code = NOT_FOUND


class RateLimited(ApiError):
    code = RATE_LIMITED


class QuotaExceeded(ApiError):
    """The tenant's tier allows no more of something (items, recommendations, training runs)."""

    code = QUOTA_EXCEEDED


_STORAGE_CODES: list[tuple[type[StorageError], str]] = [
    (NotFound, NOT_FOUND),
    (Conflict, BAD_USER_INPUT),
    (InvalidData, BAD_USER_INPUT),
]


_GENERIC_MESSAGES = {
    NOT_FOUND: "Not found.",
    BAD_USER_INPUT: "The input conflicts with existing data or breaks a data rule.",
}


def _storage_message(error: StorageError, code: str) -> str:
    # A repository's own message names the broken rule; one translated from a driver error
    # (it has a __cause__) may quote SQL, keys or other tenants' ids, so it is replaced.
    if error.__cause__ is not None or not str(error):
        return _GENERIC_MESSAGES[code]
    return str(error)


def classify(error: GraphQLError) -> tuple[str, str, dict[str, Any]]:
    """The (code, client-safe message, extra extensions) for one execution error."""
    original = error.original_error
    if original is None:
        code = (error.extensions or {}).get("code", GRAPHQL_VALIDATION_FAILED)
        return code, error.message, {}
    if isinstance(original, ApiError):
        return original.code, original.message, original.extensions
    if error.path is None and isinstance(original, GraphQLError):
        # A variable that failed coercion (a UUID that is not one, a float for an Int): the
        # request's fault, described by graphql-core in terms of the client's own value.
        return BAD_USER_INPUT, error.message, {}
    for storage_type, code in _STORAGE_CODES:
        if isinstance(original, storage_type):
            return code, _storage_message(original, code), {}
    if isinstance(original, Unavailable):
        logger.warning("backend unavailable: %s", original)
        return UNAVAILABLE, "Service temporarily unavailable, retry later.", {}
    logger.error("unexpected error in resolver", exc_info=original)
    return INTERNAL, "Internal server error.", {}


def is_server_fault(error: GraphQLError) -> bool:
    """True when ``error`` is the server's fault (``INTERNAL``: an unexpected exception;
    ``UNAVAILABLE``: an unreachable backend), not the client's (invalid query, refusal, rate
    limit), whether ``ErrorMapping`` has rebuilt it yet or not. Only these count against
    health."""
    original = error.original_error
    if original is None:
        return (error.extensions or {}).get("code") in SERVER_FAULTS
    if isinstance(original, ApiError):
        return original.code in SERVER_FAULTS
    return not any(isinstance(original, kind) for kind, _code in _STORAGE_CODES)


def rebuilt(error: GraphQLError) -> GraphQLError:
    """``error`` as it is sent: its code and client-safe message, no original exception."""
    code, message, extra = classify(error)
    return GraphQLError(
        message=message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions={**extra, "code": code, **_trace_extension()},
    )


def final_error(error: ApiError) -> GraphQLError:
    """``error`` as it is sent, for code that runs after ``ErrorMapping`` has done its pass."""
    extensions = {**error.extensions, "code": error.code, **_trace_extension()}
    return GraphQLError(error.message, extensions=extensions)


def _trace_extension() -> dict[str, str]:
    # The id an operator pastes into the tracing UI (and greps in the JSON logs).
    trace_id = current_trace_id()
    return {"traceId": trace_id} if trace_id is not None else {}


class ErrorMapping(SchemaExtension):
    """Give every error a code and drop the original exception before serialisation."""

    def on_operation(self) -> Iterator[None]:
        yield
        # Parse and validation errors land here too: Strawberry sets the result before the
        # operation hook resumes.
        _rebuild_all(self.execution_context.result)

    def on_stream_result(self, result: Any) -> Iterator[None]:
        # Subscription events bypass on_operation's result; each one passes through here.
        _rebuild_all(result)
        yield


def _rebuild_all(result: Any) -> None:
    errors = getattr(result, "errors", None)
    if errors and not all(_is_rebuilt(error) for error in errors):
        result.errors = [error if _is_rebuilt(error) else rebuilt(error) for error in errors]


def _is_rebuilt(error: GraphQLError) -> bool:
    return error.original_error is None and "code" in (error.extensions or {})

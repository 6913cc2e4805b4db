"""GraphQL over HTTP at the edge: the body-size cap, strict JSON, and the response media type.

* ``BodySizeLimit`` refuses a request body over ``RECSERVE_MAX_BODY_BYTES`` with HTTP 413 and a
  GraphQL-shaped error, counting the bytes as they arrive (a chunked body has no
  Content-Length to trust).
* ``GraphQLOverHTTP`` parses bodies as strict JSON (no ``NaN``/``Infinity``, no number that
  overflows to infinity, no nesting that would exhaust the parser's stack): a 400 with a
  ``BAD_USER_INPUT`` error instead of a 500 or a non-finite number reaching a resolver.
* POST, the request every client sends, is a plain Starlette route: the context getter is
  called directly instead of through FastAPI's dependency solving, which cost more per request
  than parsing the body. Responses are encoded with orjson. GET (GraphiQL, queries by URL) and
  websockets keep Strawberry's routes.
* It speaks ``application/graphql-response+json`` (GraphQL-over-HTTP) when the client's Accept
  prefers it: that media type, and a 4xx for request errors (parse, validation, variable
  coercion: no ``data`` entry), where ``application/json`` keeps answering 200. Strawberry 0.341
  only ever answers ``application/json``, hence this layer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from cross_web import HTTPException
from fastapi.routing import APIRoute
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.fastapi import BaseContext, GraphQLRouter
from strawberry.types.unset import UNSET

from graph_api.errors import BAD_USER_INPUT

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
APPLICATION_JSON = "application/json"


def prefers_graphql_response_json(accept: str | None) -> bool:
    """True when ``accept`` ranks graphql-response+json above application/json (ties: the
    one listed first). ``*/*`` or no header keeps the legacy application/json."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((accept or "").split(",")):
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media.lower() in (GRAPHQL_RESPONSE_JSON, APPLICATION_JSON) and quality > 0:
            ranked.append((quality, -position, media.lower()))
    return bool(ranked) and max(ranked)[2] == GRAPHQL_RESPONSE_JSON


def error_body(message: str, **extensions: Any) -> dict[str, Any]:
    return {"errors": [{"message": message, "extensions": {"code": BAD_USER_INPUT, **extensions}}]}


def error_response(status: int, body: dict[str, Any], accept: str | None) -> Response:
    media = GRAPHQL_RESPONSE_JSON if prefers_graphql_response_json(accept) else APPLICATION_JSON
    return JSONResponse(body, status_code=status, media_type=media)


class BodySizeLimit:
    """ASGI middleware: HTTP bodies larger than ``max_bytes`` never reach the app."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send, headers)
            return
        # Read (at most max_bytes of) the body first, then replay it to the app.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send, headers)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]
    ) -> None:
        body = error_body(
            f"Request body exceeds {self.max_bytes} bytes.", maxBodyBytes=self.max_bytes
        )
        response = error_response(413, body, headers.get("accept"))
        response.headers["Connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # only http.disconnect is left to wait for

    return replay


class UnreadableBody(ValueError):
    """The body is JSON only by a lenient parser's standards (NaN, 1e999, 100k levels deep)."""


def _refuse_constant(name: str) -> float:
    raise UnreadableBody(f"{name} is not a JSON number; numbers must be finite.")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UnreadableBody(f"{text[:32]} does not fit a finite number.")
    return value


def strict_json(data: str | bytes) -> object:
    try:
        return json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError as error:
        raise UnreadableBody("The JSON body is nested too deeply.") from error


# Where the POST route leaves the response that resolvers may set a status or headers on (a
# 429's Retry-After), for ``get_sub_response``: on the request, not on the shared router.
SUB_RESPONSE = "recserve.sub_response"


class GraphQLOverHTTP(GraphQLRouter[Any, None]):
    """Strawberry's FastAPI router with strict JSON, graphql-response+json and a lean POST."""

    def __init__(
        self,
        schema: Any,
        *,
        context_getter: Callable[[HTTPConnection], Awaitable[BaseContext]],
        path: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(schema, path=path, context_getter=context_getter, **kwargs)
        self._make_context = context_getter
        # ``graph_api.fast_path.FastPath``: known recommendations documents without the
        # executor (set by ``create_app``; None answers everything the full way).
        self.fast_path: Any = None
        self.routes[:] = [
            route
            for route in self.routes
            if not (isinstance(route, APIRoute) and "POST" in route.methods)
        ]

    def install(self, app: Any, prefix: str) -> None:
        """Serve the GraphQL endpoint at ``prefix`` of ``app``: POST here, the rest routed."""
        app.add_route(prefix, self._post, methods=["POST"])
        app.include_router(self, prefix=prefix)

    async def _post(self, request: Request) -> Response:
        sub_response = Response()
        del sub_response.headers["content-length"]
        sub_response.status_code = None  # type: ignore[assignment]  # "unset", as FastAPI's
        request.scope[SUB_RESPONSE] = sub_response
        context = await self._make_context(request)
        context.request, context.response = request, sub_response
        if self.fast_path is not None and _is_json(request):
            try:
                body = strict_json(await request.body())
            except (UnreadableBody, ValueError):
                body = None  # the full path answers with its error
            answered = await self.fast_path.answer(body, context, request.headers.get("accept"))
            if answered is not None:
                return answered
        try:
            return await self.run(request=request, context=context, root_value=None)
        except HTTPException as error:
            return PlainTextResponse(error.reason, status_code=error.status_code)

    async def get_sub_response(self, request: Request) -> Response:
        found = request.scope.get(SUB_RESPONSE)
        return found if found is not None else await super().get_sub_response(request)

    def decode_json(self, data: str | bytes) -> object:
        return strict_json(data)

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        if self.is_websocket_request(request):
            return await super().run(request, context, root_value)
        accept = request.headers.get("accept")
        try:
            response = await super().run(request, context, root_value)
        except UnreadableBody as error:
            return error_response(400, error_body(str(error)), accept)
        if not prefers_graphql_response_json(accept):
            return response
        return as_graphql_response_json(response)


def _is_json(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip() == APPLICATION_JSON


def as_graphql_response_json(response: Any) -> Any:
    """The same answer as graphql-response+json: a request error (errors, no path, no data)
    loses its ``data`` entry and becomes a 400 unless it already has a 4xx (429)."""
    if response.headers.get("content-type", "").split(";")[0] != APPLICATION_JSON:
        return response  # GraphiQL's page, a stream, a plain-text 4xx from Strawberry
    payload = json.loads(response.body)
    status = response.status_code
    if _is_request_error(payload):
        del payload["data"]
        status = 400 if status == 200 else status
    headers = {
        k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")
    }
    return JSONResponse(
        payload, status_code=status, headers=headers, media_type=GRAPHQL_RESPONSE_JSON
    )


def _is_request_error(payload: Any) -> bool:
    if not isinstance(payload, dict) or payload.get("data") is not None:
        return False
    errors = payload.get("errors") or []
    return bool(errors) and all("path" not in error for error in errors)

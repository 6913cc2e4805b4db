"""Concurrent calls to engine deployments, each with its own deadline.

An engine that raises or misses its deadline is dropped from this request and named in
``failed``: one slow or broken engine never costs the caller more than the timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from storage import meters
from storage.tracing import tracer

logger = logging.getLogger("ray.serve")

Pairs = list[tuple[str, float]]


def failure_reason(error: BaseException) -> str:
    """A bounded label: "timeout" or "error" (the exception text goes to the log only)."""
    return "timeout" if isinstance(error, TimeoutError) else "error"


@dataclass
class FanOutResult:
    results: dict[str, Pairs] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)


async def _await_response(response: Any) -> Any:
    return await response


async def call_with_timeout(name: str, make_call: Callable[[], Any], timeout_s: float) -> Pairs:
    # The call is made inside the span so the payload's traceparent names it as the parent.
    with tracer().start_as_current_span(f"engine {name}", attributes={"engine": name}):
        response = make_call()
        try:
            return await asyncio.wait_for(_await_response(response), timeout=timeout_s)
        except BaseException:
            # Cancelling the DeploymentResponse frees the engine replica from a request nobody
            # awaits.
            cancel = getattr(response, "cancel", None)
            if callable(cancel):
                cancel()
            raise


async def fan_out(calls: Mapping[str, Callable[[], Any]], timeout_s: float) -> FanOutResult:
    """Run every call concurrently; keep the answers that arrive in time, in ``calls`` order."""
    names = list(calls)
    outcomes = await asyncio.gather(
        *(call_with_timeout(name, calls[name], timeout_s) for name in names),
        return_exceptions=True,
    )
    merged = FanOutResult()
    for name, outcome in zip(names, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            reason = "timed out" if isinstance(outcome, TimeoutError) else repr(outcome)
            logger.warning("engine %s dropped: %s", name, reason[:500])
            meters.engine_failure(name, failure_reason(outcome))
            merged.failed.append(name)
        else:
            merged.results[name] = [(str(i), float(s)) for i, s in outcome]
    return merged


async def failed_calls(calls: Mapping[str, Callable[[], Any]], timeout_s: float) -> set[str]:
    """The names of the calls that raised or missed the deadline (answers are not kept)."""
    names = list(calls)
    outcomes = await asyncio.gather(
        *(asyncio.wait_for(_await_response(calls[n]()), timeout=timeout_s) for n in names),
        return_exceptions=True,
    )
    return {n for n, o in zip(names, outcomes, strict=True) if isinstance(o, BaseException)}


async def first_answer(
    calls: Mapping[str, Callable[[], Any]],
    timeout_s: float,
    usable: Callable[[Any], bool] = bool,
) -> tuple[str | None, Any, list[str]]:
    """Try engines in order until one gives a usable answer: (engine, answer, failed)."""
    failed: list[str] = []
    for name, make_call in calls.items():
        try:
            answer = await call_with_timeout(name, make_call, timeout_s)
        except Exception as error:
            logger.warning("engine %s dropped: %r", name, error)
            meters.engine_failure(name, failure_reason(error))
            failed.append(name)
            continue
        if usable(answer):
            return name, answer, failed
    return None, None, failed

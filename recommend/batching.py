"""Caller-side coalescing of Serve calls: concurrent requests share one remote call.

Every Serve call costs both replicas a few milliseconds of Python (serialisation, the router,
the replica's request handling), whatever its payload: with 8 clients the ingress pays it once
per request towards the combiner, and the combiner once per request and engine. ``@serve.batch``
batches on the receiving side, after every call has been paid for. ``CallBatcher`` batches on the
sending side: the first call of a key goes out at once (an idle server adds no delay); calls that
arrive while ``max_inflight`` calls of that key are under way wait and leave together, as one
call with a list, when one of those returns. Under load the batches grow by themselves; alone, a
request travels as it always did.

A failed batch fails each of its callers with the same error; an item's own error (returned in
its place by the receiver) fails only that caller. A caller that stops waiting (a timeout)
leaves the batch to finish for the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
Q = TypeVar("Q")

Send = Callable[[K, list[Q]], Awaitable[list[Any]]]


@dataclass
class _Lane(Generic[Q]):
    waiting: list[tuple[Q, asyncio.Future[Any]]] = field(default_factory=list)
    inflight: int = 0


class CallBatcher(Generic[K, Q]):
    """``await submit(key, item)``: the item's answer from ``send(key, [items])``."""

    def __init__(self, send: Send[K, Q], *, max_batch: int, max_inflight: int = 2) -> None:
        self._send = send
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self._lanes: dict[K, _Lane[Q]] = {}
        self.calls = 0  # remote calls made (for tests and benchmarks)

    async def submit(self, key: K, item: Q) -> Any:
        lane = self._lanes.setdefault(key, _Lane())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # Retrieved here too, so an error nobody waits for any more is not logged as lost.
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        lane.waiting.append((item, future))
        if lane.inflight < self.max_inflight:
            lane.inflight += 1
            asyncio.get_running_loop().create_task(self._drain(key, lane))
        # Shielded: a caller that gives up must not cancel the batch its neighbours share.
        return await asyncio.shield(future)

    async def _drain(self, key: K, lane: _Lane[Q]) -> None:
        try:
            while lane.waiting:
                batch, lane.waiting = (
                    lane.waiting[: self.max_batch],
                    lane.waiting[self.max_batch :],
                )
                await self._call(key, batch)
        finally:
            lane.inflight -= 1
            if not lane.inflight and not lane.waiting:
                self._lanes.pop(key, None)

    async def _call(self, key: K, batch: list[tuple[Q, asyncio.Future[Any]]]) -> None:
        self.calls += 1
        try:
            answers = await self._send(key, [item for item, _ in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"{len(answers)} answers to a batch of {len(batch)}")
        except Exception as error:  # the whole call failed: every caller hears why
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            if future.done():
                continue
            if isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)

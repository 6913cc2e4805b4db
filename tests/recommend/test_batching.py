"""Caller-side coalescing: one remote call for concurrent requests, none delayed when idle."""

from __future__ import annotations

import asyncio

import pytest

from recommend.batching import CallBatcher


class Receiver:
    """A remote side that answers after ``delay`` and records every batch it received."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.batches: list[tuple[str, list[int]]] = []

    async def send(self, key: str, items: list[int]) -> list[object]:
        self.batches.append((key, list(items)))
        await asyncio.sleep(self.delay)
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


async def test_a_lone_call_leaves_at_once_and_alone() -> None:
    receiver = Receiver(delay=0.0)
    batcher = CallBatcher(receiver.send, max_batch=32)
    assert await batcher.submit("a", 1) == 10
    assert await batcher.submit("a", 2) == 20
    assert receiver.batches == [("a", [1]), ("a", [2])]


async def test_concurrent_calls_of_a_key_share_remote_calls() -> None:
    receiver = Receiver()
    batcher = CallBatcher(receiver.send, max_batch=32, max_inflight=1)
    answers = await asyncio.gather(*(batcher.submit("a", i) for i in range(5)))
    assert answers == [i * 10 for i in range(5)]
    assert receiver.batches == [("a", [0, 1, 2, 3, 4])]  # made in one tick: one call
    # Calls that arrive while one is out wait for it, then leave together.
    first = asyncio.ensure_future(batcher.submit("a", 0))
    await asyncio.sleep(0.001)  # it has left
    later = await asyncio.gather(*(batcher.submit("a", i) for i in range(1, 10)))
    assert await first == 0 and later == [i * 10 for i in range(1, 10)]
    assert receiver.batches[1:] == [("a", [0]), ("a", list(range(1, 10)))]
    assert batcher.calls == 3


async def test_keys_never_mix_and_batches_are_capped() -> None:
    receiver = Receiver()
    batcher = CallBatcher(receiver.send, max_batch=3, max_inflight=1)
    calls = [batcher.submit(key, i) for i in range(7) for key in ("a", "b")]
    answers = await asyncio.gather(*calls)
    assert answers == [i * 10 for i in range(7) for _ in ("a", "b")]
    for key in ("a", "b"):
        assert [items for k, items in receiver.batches if k == key] == [[0, 1, 2], [3, 4, 5], [6]]


async def test_up_to_max_inflight_calls_run_at_once() -> None:
    receiver = Receiver()
    batcher = CallBatcher(receiver.send, max_batch=32, max_inflight=2)
    first = asyncio.ensure_future(batcher.submit("a", 0))
    await asyncio.sleep(0.001)
    second = asyncio.ensure_future(batcher.submit("a", 1))
    await asyncio.sleep(0.001)
    # Both are out at once; the next four wait for whichever returns first.
    rest = await asyncio.gather(*(batcher.submit("a", i) for i in range(2, 6)))
    assert (await first, await second, rest) == (0, 10, [20, 30, 40, 50])
    assert [items for _, items in receiver.batches] == [[0], [1], [2, 3, 4, 5]]


async def test_an_items_error_fails_its_caller_only_and_a_failed_call_fails_all() -> None:
    receiver = Receiver()
    batcher = CallBatcher(receiver.send, max_batch=32, max_inflight=1)
    first = asyncio.ensure_future(batcher.submit("a", 1))
    outcomes = await asyncio.gather(
        *(batcher.submit("a", i) for i in (2, -3, 4)), return_exceptions=True
    )
    assert await first == 10
    assert outcomes[0] == 20 and outcomes[2] == 40
    assert isinstance(outcomes[1], ValueError) and str(outcomes[1]) == "bad -3"

    async def broken(key: str, items: list[int]) -> list[object]:
        raise ConnectionError("replica gone")

    failing = CallBatcher(broken, max_batch=32)
    outcomes = await asyncio.gather(
        *(failing.submit("a", i) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(o, ConnectionError) for o in outcomes)


async def test_a_caller_that_gives_up_leaves_the_batch_to_the_others() -> None:
    receiver = Receiver(delay=0.05)
    batcher = CallBatcher(receiver.send, max_batch=32, max_inflight=1)
    first = asyncio.ensure_future(batcher.submit("a", 1))
    await asyncio.sleep(0)
    impatient = asyncio.ensure_future(asyncio.wait_for(batcher.submit("a", 2), 0.01))
    patient = asyncio.ensure_future(batcher.submit("a", 3))
    with pytest.raises(TimeoutError):
        await impatient
    assert await first == 10 and await patient == 30
    # The batch still carried item 2 for its caller, who had left by then.
    assert [(k, sorted(items)) for k, items in receiver.batches] == [("a", [1]), ("a", [2, 3])]

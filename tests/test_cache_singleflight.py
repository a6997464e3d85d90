"""SingleFlight: identical concurrent calls share one call, its result or its exception, and a
caller that goes away does not take the call from the others."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest
from prometheus_client import REGISTRY

from metahub.cache.singleflight import SingleFlight


def waiters(kind: str) -> float:
    found = REGISTRY.get_sample_value("metahub_coalesced_waiters_total", {"kind": kind})
    return found or 0.0


async def test_concurrent_callers_share_one_call():
    flight: SingleFlight[str, int] = SingleFlight("test-share")
    calls = 0
    release = asyncio.Event()

    async def call() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return 42

    callers = [asyncio.create_task(flight.do("key", call)) for _ in range(50)]
    await asyncio.sleep(0)
    assert flight.in_flight("key")
    release.set()

    assert await asyncio.gather(*callers) == [42] * 50
    assert calls == 1
    assert waiters("test-share") == 49
    assert not flight.in_flight("key")


async def test_different_keys_do_not_wait_for_each_other():
    flight: SingleFlight[str, str] = SingleFlight("test-keys")

    async def call(value: str) -> str:
        await asyncio.sleep(0)
        return value

    results = await asyncio.gather(*(flight.do(k, partial(call, k)) for k in "abc"))

    assert results == ["a", "b", "c"]


async def test_every_waiter_gets_the_same_exception_and_the_next_call_runs_again():
    flight: SingleFlight[str, int] = SingleFlight("test-errors")
    calls = 0

    async def failing() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise LookupError("upstream said no")

    results = await asyncio.gather(
        *(flight.do("key", failing) for _ in range(5)), return_exceptions=True
    )

    assert calls == 1
    assert all(isinstance(r, LookupError) for r in results)
    with pytest.raises(LookupError):
        await flight.do("key", failing)
    assert calls == 2


async def test_a_caller_that_goes_away_leaves_the_call_to_the_others():
    flight: SingleFlight[str, int] = SingleFlight("test-cancel")
    release = asyncio.Event()

    async def call() -> int:
        await release.wait()
        return 7

    first = asyncio.create_task(flight.do("key", call))
    await asyncio.sleep(0)
    second = asyncio.create_task(flight.do("key", call))
    await asyncio.sleep(0)
    first.cancel()  # the client that started it disconnected
    await asyncio.sleep(0)
    release.set()

    assert await second == 7
    with pytest.raises(asyncio.CancelledError):
        await first

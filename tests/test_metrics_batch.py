"""metrics.count: at once, or added up while a batch is open and applied at the end of the turn,
before anything queued after the batch opened (a response's write)."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Histogram

from metahub import metrics


def counter(name: str) -> Counter:
    return Counter(name, "a test counter", registry=CollectorRegistry())


def value(series: Counter) -> float:
    return series._value.get()


def test_without_a_batch_a_count_is_applied_at_once() -> None:
    series = counter("at_once")
    metrics.count(series)
    metrics.count(series, 2.5)
    assert value(series) == 3.5


async def test_a_batch_adds_up_and_applies_before_what_is_queued_after_it() -> None:
    loop = asyncio.get_running_loop()
    first, second = counter("first"), counter("second")
    seen_by_the_write: list[tuple[float, float]] = []

    metrics.open_batch(loop)
    try:
        metrics.count(first)
        metrics.count(second, 100)
    finally:
        metrics.close_batch()
    # A response's write, queued after the batch opened: the counts are in when it runs.
    loop.call_soon(lambda: seen_by_the_write.append((value(first), value(second))))
    assert (value(first), value(second)) == (0, 0)  # held within the turn

    metrics.open_batch(loop)  # a second answer in the same turn joins the pending sums
    try:
        metrics.count(first)
    finally:
        metrics.close_batch()
    metrics.count(second)  # no batch open: at once
    assert (value(first), value(second)) == (0, 1)

    await asyncio.sleep(0)
    assert seen_by_the_write == [(2, 101)]
    assert (value(first), value(second)) == (2, 101)


async def test_a_batch_after_the_last_was_applied_is_applied_in_its_own_turn() -> None:
    loop = asyncio.get_running_loop()
    series = counter("later")
    for expected in (1, 2):
        metrics.open_batch(loop)
        try:
            metrics.count(series)
        finally:
            metrics.close_batch()
        await asyncio.sleep(0)
        assert value(series) == expected


async def test_a_batched_observation_lands_where_observe_puts_it() -> None:
    """Against prometheus_client's own Histogram.observe, bounds themselves and +Inf included."""
    buckets = (0.001, 0.01, 0.1, 1.0)
    direct, batched = (
        Histogram(name, "a test histogram", buckets=buckets, registry=CollectorRegistry())
        for name in ("direct", "batched")
    )
    amounts = [0.0, 0.0005, 0.001, 0.0011, 0.01, 0.05, 0.1, 1.0, 2.5, 1e9]
    for amount in amounts:
        direct.observe(amount)
    metrics.open_batch(asyncio.get_running_loop())
    try:
        for amount in amounts:
            metrics.observe(batched, amount)
    finally:
        metrics.close_batch()
    assert samples(batched) == {name: 0 for name in samples(direct)}  # held within the turn
    await asyncio.sleep(0)
    assert samples(batched) == samples(direct)


def samples(histogram: Histogram) -> dict[str, float]:
    """Bucket counts, sum and count, by sample name and bound; the _created time left out."""
    (metric,) = histogram.collect()
    return {
        f"{s.name.rsplit('_', 1)[-1]}{s.labels.get('le', '')}": s.value
        for s in metric.samples
        if not s.name.endswith("_created")
    }

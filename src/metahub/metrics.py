"""Prometheus metrics, defined in one place so every module counts into the same names.

With several workers, prometheus_client's multiprocess mode is switched on by `metahub serve`
(PROMETHEUS_MULTIPROC_DIR) before this module is imported, so `/metrics` adds up all workers.
"""

from __future__ import annotations

import asyncio
import bisect
from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "metahub_http_requests_total", "HTTP requests answered", ["route", "method", "status"]
)
LATENCY = Histogram(
    "metahub_http_request_duration_seconds",
    "Time to the end of the response",
    ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BYTES_SERVED = Counter("metahub_bytes_served_total", "Response body bytes sent", ["route"])
CACHE = Counter("metahub_cache_requests_total", "Cache lookups", ["cache", "result"])
UPSTREAM = Counter(
    "metahub_upstream_requests_total",
    "Requests to an upstream",
    ["upstream", "method", "outcome"],
)
UPSTREAM_RETRIES = Counter(
    "metahub_upstream_retries_total", "Upstream requests retried", ["upstream"]
)
COALESCED = Counter(
    "metahub_coalesced_waiters_total",
    "Requests that waited for an identical one in flight",
    ["kind"],
)
STALE_SERVES = Counter(
    "metahub_stale_serves_total", "Answers served from cache because the upstream failed"
)
BLOB_CACHE_BYTES = Gauge(
    "metahub_blob_cache_bytes", "Bytes held in the local blob cache", multiprocess_mode="max"
)
DIGEST_MISMATCHES = Counter(
    "metahub_digest_mismatches_total", "Upstream blobs whose bytes did not match their digest"
)
BLOB_CACHE_WRITE_ERRORS = Counter(
    "metahub_blob_cache_write_errors_total",
    "Blob downloads the cache could not write to disk, served straight from the upstream instead",
)
MANIFEST_PULLS = Counter(
    "metahub_manifest_pulls_total",
    "Manifest pulls by tag, by machine type (profile logins under their account) and outcome",
    ["machine_type", "outcome"],
)


class Incrementable(Protocol):
    def inc(self, amount: float = 1) -> None: ...


# Counts made while the HTTP protocol answers a warm request from memory (server/protocol.py)
# are added up here and applied together at the end of the event loop's turn: every `inc` takes
# a lock (in multiprocess mode, it also writes to a shared file), and a warm pull makes six and
# a histogram observation, an eighth of its CPU in a profile. The sums are applied in a callback
# queued before the response's write, so a client that has its answer finds it counted.
_pending: dict[Incrementable, float] | None = None
_batch: dict[Incrementable, float] | None = None


def count(series: Incrementable, amount: float = 1) -> None:
    """`series.inc(amount)`, now or with the open batch."""
    batch = _batch
    if batch is None:
        series.inc(amount)
    else:
        batch[series] = batch.get(series, 0) + amount


def observe(series: Histogram, amount: float) -> None:
    """`series.observe(amount)`, now or with the open batch.

    In a batch, the amount goes to the sum and to the bucket `Histogram.observe` would count it
    in (the first whose bound it does not pass), each applied as a count: prometheus_client's
    own parts of a histogram, read here since it offers no way to observe many at once.
    """
    batch = _batch
    if batch is None:
        series.observe(amount)
        return
    bucket = series._buckets[bisect.bisect_left(series._upper_bounds, amount)]
    total = series._sum
    batch[total] = batch.get(total, 0) + amount
    batch[bucket] = batch.get(bucket, 0) + 1


def open_batch(loop: asyncio.AbstractEventLoop) -> None:
    """From now until close_batch, `count` adds up, to be applied at the end of this turn."""
    global _pending, _batch
    if _pending is None:
        _pending = {}
        loop.call_soon(_apply)
    _batch = _pending


def close_batch() -> None:
    global _batch
    _batch = None


def _apply() -> None:
    global _pending
    pending, _pending = _pending, None
    for series, amount in (pending or {}).items():
        series.inc(amount)

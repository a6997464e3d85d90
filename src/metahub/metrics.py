"""Prometheus metrics, defined in one place so every module counts into the same names.

With several workers, prometheus_client's multiprocess mode is switched on by `metahub serve`
(PROMETHEUS_MULTIPROC_DIR) before this module is imported, so `/metrics` adds up all workers.
"""

from __future__ import annotations

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

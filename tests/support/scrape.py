"""Read MetaHub's `/metrics` as a Prometheus server would, with its own text parser."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(source: str | httpx.Client) -> Samples:
    """The samples of `/metrics` at a base URL, or through a client (of an in-process hub)."""
    if isinstance(source, httpx.Client):
        response = source.get("/metrics")
    else:
        response = httpx.get(f"{source}/metrics", timeout=30)
    response.raise_for_status()
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample `name` with exactly these labels; 0 when it was never counted."""
    return samples.get((name, frozenset(labels.items())), 0.0)

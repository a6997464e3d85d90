"""When to try an upstream request again, and how long to wait first."""

from __future__ import annotations

import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from time import time


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter; a Retry-After from the upstream is honoured.

    `retries` is how many times a request is repeated after the first try. A Retry-After longer
    than `max_delay` is not waited for: the client gets the 429/503 at once and can decide.
    """

    retries: int = 2
    base_delay: float = 0.1
    max_delay: float = 5.0

    def delay(self, attempt: int, retry_after: str | None) -> float | None:
        """Seconds to wait before retry number `attempt + 1`, or None to give up."""
        if attempt >= self.retries:
            return None
        if retry_after is not None:
            wanted = _retry_after_seconds(retry_after)
            if wanted is not None:
                return wanted if wanted <= self.max_delay else None
        ceiling = min(self.max_delay, self.base_delay * 2**attempt)
        return random.uniform(0, ceiling)


def _retry_after_seconds(value: str) -> float | None:
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time())

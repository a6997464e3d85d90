"""Failed logins per source address: after `limit` in `window` seconds, refuse for a while.

Argon2 makes every guess cost ~100 ms of CPU, which is also what an attacker would make us
spend; refusing early protects both the secrets and the service.
"""

from __future__ import annotations

import time
from collections import deque

from metahub import errors


class FailureLimiter:
    def __init__(self, limit: int = 10, window: float = 60.0, *, max_addresses: int = 65536):
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._max_addresses = max_addresses

    def check(self, address: str) -> None:
        """Raise TOOMANYREQUESTS while `address` is over its limit."""
        failures = self._recent(address)
        if failures is not None and len(failures) >= self.limit:
            retry_after = max(1, int(failures[0] + self.window - time.monotonic()) + 1)
            raise errors.TooManyRequests(
                f"too many failed logins from {address}; try again in {retry_after} s",
                headers={"Retry-After": str(retry_after)},
            )

    def failed(self, address: str) -> None:
        failures = self._recent(address)
        if failures is None:
            if len(self._failures) >= self._max_addresses:
                self._failures.pop(next(iter(self._failures)))
            failures = self._failures[address] = deque()
        failures.append(time.monotonic())

    def _recent(self, address: str) -> deque[float] | None:
        failures = self._failures.get(address)
        if failures is None:
            return None
        horizon = time.monotonic() - self.window
        while failures and failures[0] < horizon:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return failures

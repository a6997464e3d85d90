"""Coalescing: concurrent callers asking for the same key share one call in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from metahub import metrics

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """When 200 nodes ask for one cold tag at once, the upstream is asked once.

    The first caller runs the call in a task of its own, so a caller that goes away (a client
    disconnecting) does not cancel it for the others; every waiter gets the same result or the
    same exception.
    """

    def __init__(self, kind: str) -> None:
        self._inflight: dict[K, asyncio.Future[V]] = {}
        self._waiters = metrics.COALESCED.labels(kind)

    def in_flight(self, key: K) -> bool:
        return key in self._inflight

    async def do(self, key: K, call: Callable[[], Awaitable[V]]) -> V:
        future = self._inflight.get(key)
        if future is not None:
            self._waiters.inc()
            return await asyncio.shield(future)
        task: asyncio.Task[V] = asyncio.ensure_future(call())
        self._inflight[key] = task
        task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task)

    def _finished(self, key: K, task: asyncio.Future[V]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so a result nobody waited for logs no warning

"""Least-recently-used maps: bounded by the total size of their values, or by their count; and
plain memos bounded by their count, oldest out first."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from metahub import metrics

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def remember(memo: dict[K, V], key: K, value: V, limit: int) -> None:
    """Put `key` in a plain dict memo of at most `limit` entries, the oldest put going first:
    for small answers the hot path looks up on every request, where an LRU's reordering on each
    hit would cost more than the rare miss it saves."""
    if len(memo) >= limit and key not in memo:
        del memo[next(iter(memo))]
    memo[key] = value


class SizedLRU(Generic[K, V]):
    def __init__(self, name: str, max_bytes: int, size_of: Callable[[V], int]) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self.bytes = 0
        self._hit = metrics.CACHE.labels(name, "hit")
        self._miss = metrics.CACHE.labels(name, "miss")

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            self._miss.inc()
            return None
        self._items.move_to_end(key)
        metrics.count(self._hit)
        return item[0]

    def holds(self, key: K) -> bool:
        """Whether `key` is cached; unlike get, counts nothing and leaves the order alone."""
        return key in self._items

    def peek(self, key: K) -> V | None:
        """The value of `key`; unlike get, counts nothing and leaves the order alone."""
        item = self._items.get(key)
        return None if item is None else item[0]

    def put(self, key: K, value: V) -> None:
        size = self._size_of(value)
        if size > self.max_bytes:
            return  # larger than the whole cache: caching it would only evict everything
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._items[key] = (value, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, evicted) = self._items.popitem(last=False)
            self.bytes -= evicted

    def pop(self, key: K) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old[1]


class CountedLRU(Generic[K, V]):
    """A least-recently-used map of at most `max_entries` entries, for values of one small size.

    It counts no hits or misses: its owner knows better what one means.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def peek(self, key: K) -> V | None:
        """The value of `key`, leaving the order alone."""
        return self._items.get(key)

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def pop(self, key: K) -> None:
        self._items.pop(key, None)

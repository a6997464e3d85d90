"""SizedLRU and CountedLRU: bounded by the bytes or the number of what they hold, least recently
used out first."""

from __future__ import annotations

from prometheus_client import REGISTRY

from metahub.cache.lru import CountedLRU, SizedLRU, remember


def lru(max_bytes: int, name: str = "test-lru") -> SizedLRU[str, bytes]:
    return SizedLRU(name, max_bytes, len)


def counted(name: str, result: str) -> float:
    found = REGISTRY.get_sample_value(
        "metahub_cache_requests_total", {"cache": name, "result": result}
    )
    return found or 0.0


def test_the_least_recently_used_goes_first_when_the_bytes_run_out():
    cache = lru(30)
    cache.put("a", b"a" * 10)
    cache.put("b", b"b" * 10)
    cache.put("c", b"c" * 10)
    assert cache.get("a") == b"a" * 10  # a is now the most recent; b the least

    cache.put("d", b"d" * 10)

    assert cache.get("b") is None
    assert [cache.get(k) is not None for k in "acd"] == [True, True, True]
    assert cache.bytes == 30
    assert len(cache) == 3


def test_a_large_value_evicts_as_many_as_it_needs():
    cache = lru(30)
    for key in "abc":
        cache.put(key, key.encode() * 10)

    cache.put("big", b"x" * 25)

    assert len(cache) == 1
    assert cache.bytes == 25
    assert cache.get("big") == b"x" * 25


def test_a_value_larger_than_the_cache_is_not_kept_and_evicts_nothing():
    cache = lru(30)
    cache.put("a", b"a" * 10)

    cache.put("huge", b"x" * 31)

    assert cache.get("huge") is None
    assert cache.get("a") == b"a" * 10
    assert cache.bytes == 10


def test_replacing_a_key_counts_its_bytes_once():
    cache = lru(30)
    cache.put("a", b"a" * 10)
    cache.put("a", b"A" * 20)
    cache.put("b", b"b" * 10)

    assert cache.bytes == 30
    assert cache.get("a") == b"A" * 20
    assert cache.get("b") == b"b" * 10


def test_pop_frees_the_bytes():
    cache = lru(30)
    cache.put("a", b"a" * 10)
    cache.pop("a")
    cache.pop("never there")

    assert cache.bytes == 0
    assert cache.get("a") is None


def test_hits_and_misses_are_counted_under_the_cache_name():
    cache = lru(30, "test-lru-metrics")
    hits, misses = counted("test-lru-metrics", "hit"), counted("test-lru-metrics", "miss")
    cache.put("a", b"a")
    cache.get("a")
    cache.get("a")
    cache.get("b")

    assert counted("test-lru-metrics", "hit") == hits + 2
    assert counted("test-lru-metrics", "miss") == misses + 1


def test_a_counted_lru_keeps_the_most_recently_used_entries():
    cache: CountedLRU[str, int] = CountedLRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # now b is the least recently used
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    assert len(cache) == 2


def test_a_counted_lru_replaces_a_key_in_place_and_pops():
    cache: CountedLRU[str, int] = CountedLRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("a", 10)  # a replaced, and now the most recent: b goes next
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (10, None, 3)
    cache.pop("a")
    cache.pop("missing")
    assert (cache.get("a"), len(cache)) == (None, 1)


def test_a_remembered_memo_keeps_its_limit_dropping_the_oldest_put() -> None:
    memo: dict[str, int] = {}
    for number in range(5):
        remember(memo, f"k{number}", number, 3)
    assert memo == {"k2": 2, "k3": 3, "k4": 4}
    remember(memo, "k2", 20, 3)  # a key already there is replaced; nothing else goes
    assert memo == {"k2": 20, "k3": 3, "k4": 4}
    remember(memo, "k5", 5, 3)  # k2 is still the oldest put
    assert memo == {"k3": 3, "k4": 4, "k5": 5}

"""The registry client's token cache and Basic credentials, without a registry."""

from __future__ import annotations

import base64

import pytest

from metahub.client import auth
from metahub.client.auth import TokenCache, pull_scope, push_scope, scope_key
from metahub.client.credentials import BasicCredentials


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(auth.time, "monotonic", clock)
    return clock


def test_a_token_is_dropped_its_margin_before_it_expires(clock: Clock) -> None:
    cache = TokenCache(margin=10.0)
    key = scope_key([pull_scope("a")])
    cache.put(key, "tok", 60.0)
    clock.now += 49.9
    assert cache.get(key) == "tok"
    clock.now += 0.2
    assert cache.get(key) is None


def test_a_token_shorter_lived_than_the_margin_still_serves_a_moment(clock: Clock) -> None:
    cache = TokenCache(margin=10.0)
    cache.put((), "tok", 5.0)
    clock.now += 0.9
    assert cache.get(()) == "tok"
    clock.now += 0.2
    assert cache.get(()) is None


def test_a_token_for_more_scopes_serves_fewer_but_not_others(clock: Clock) -> None:
    cache = TokenCache()
    cache.put(scope_key([push_scope("a"), pull_scope("b")]), "mount", 300.0)
    assert cache.get(scope_key([push_scope("a")])) == "mount"
    assert cache.get(scope_key([pull_scope("b"), push_scope("a")])) == "mount"
    assert cache.get(scope_key([pull_scope("c")])) is None
    assert cache.get(scope_key([push_scope("a"), pull_scope("c")])) is None


def test_an_exact_token_is_preferred_and_expired_ones_serve_nothing(clock: Clock) -> None:
    cache = TokenCache()
    cache.put(scope_key([push_scope("a"), pull_scope("b")]), "wide", 30.0)
    cache.put(scope_key([push_scope("a")]), "exact", 300.0)
    assert cache.get(scope_key([push_scope("a")])) == "exact"
    clock.now += 100
    assert cache.get(scope_key([pull_scope("b")])) is None


def test_scope_keys_ignore_order_and_repeats() -> None:
    assert scope_key(["b", "a", "b"]) == scope_key(["a", "b"]) == ("a", "b")


def test_basic_credentials_are_utf8_as_docker_sends_them() -> None:
    header = BasicCredentials("bot", "pässwörd:1").header()
    scheme, _, encoded = header.partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == "bot:pässwörd:1"

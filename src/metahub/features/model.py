"""Features as written in configs and in `platform.features`: `key:value` strings."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*\Z")


class InvalidFeature(ValueError):
    pass


@dataclass(frozen=True, slots=True, order=True)
class Feature:
    key: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Feature:
        key, sep, value = text.strip().partition(":")
        if not sep or not value or not _KEY_RE.match(key) or any(c.isspace() for c in value):
            raise InvalidFeature(
                f"invalid feature {text!r}: expected key:value, e.g. cpu:skylake or nvcap:8.6"
            )
        return cls(key, value)

    def __str__(self) -> str:
        return f"{self.key}:{self.value}"


@lru_cache(maxsize=16384)
def parse_feature(text: str) -> Feature:
    """Feature.parse, remembered: the same few feature strings recur in every index."""
    return Feature.parse(text)


def group_by_key(features: Iterable[Feature]) -> Mapping[str, tuple[str, ...]]:
    """A machine may hold several values of one key (two GPU models: two `nvcap`)."""
    grouped: dict[str, list[str]] = {}
    for feature in features:
        grouped.setdefault(feature.key, []).append(feature.value)
    return {key: tuple(values) for key, values in grouped.items()}

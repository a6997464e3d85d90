"""Content digests (`algorithm:hex`), validated by the distribution spec's grammar."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)\Z")


class InvalidDigest(ValueError):
    """A string that is not a digest this registry can verify."""


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    hex: str

    @classmethod
    def parse(cls, value: str) -> Digest:
        match = _DIGEST_RE.match(value)
        if match is None:
            raise InvalidDigest(f"invalid digest {value!r}: expected algorithm:hex")
        algorithm, encoded = match.groups()
        length = _HEX_LENGTH.get(algorithm)
        if length is None:
            raise InvalidDigest(
                f"unsupported digest algorithm {algorithm!r} in {value!r}: "
                f"use one of {', '.join(sorted(_HEX_LENGTH))}"
            )
        if len(encoded) != length or not all(c in "0123456789abcdef" for c in encoded):
            raise InvalidDigest(
                f"invalid {algorithm} digest {value!r}: expected {length} lowercase hex characters"
            )
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def looks_like_digest(reference: str) -> bool:
    """Tags cannot contain ':', so any reference with one is meant as a digest."""
    return ":" in reference

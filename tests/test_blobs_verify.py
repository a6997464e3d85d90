"""Verification while streaming: every byte is hashed in order, and the last chunk goes out
only once the digest checks out, wherever in the blob the wrong bytes are.

In-process: `verified` over chunks of the size the upstream client reads.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

import pytest

from metahub import errors
from metahub.serving.verify import verified

# About what the upstream client delivers at a time on loopback (the event loop's read buffer).
CHUNK = 256 * 1024


async def chunks_of(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def digest_of(parts: list[bytes]) -> str:
    return "sha256:" + hashlib.sha256(b"".join(parts)).hexdigest()


async def received(parts: list[bytes], digest: str) -> tuple[list[bytes], Exception | None]:
    got: list[bytes] = []
    try:
        async for chunk in verified(chunks_of(parts), digest, sum(map(len, parts)), "upstream"):
            got.append(chunk)
    except errors.UpstreamError as exc:
        return got, exc
    return got, None


async def test_right_bytes_all_arrive_in_order() -> None:
    parts = [os.urandom(CHUNK) for _ in range(7)] + [b"tail", os.urandom(CHUNK + 3)]

    got, ended = await received(parts, digest_of(parts))

    assert ended is None
    assert got == parts


@pytest.mark.parametrize("where", [0, 3, 6], ids=["first", "middle", "last"])
async def test_a_corrupt_chunk_anywhere_keeps_the_last_chunk_back(where: int) -> None:
    parts = [os.urandom(CHUNK) for _ in range(7)]
    digest = digest_of(parts)
    corrupt = list(parts)
    corrupt[where] = bytes([corrupt[where][0] ^ 0xFF]) + corrupt[where][1:]

    got, ended = await received(corrupt, digest)

    assert isinstance(ended, errors.UpstreamError)
    assert "do not match" in ended.message
    assert got == corrupt[:-1]  # everything but the last chunk: never a complete wrong blob


async def test_a_short_body_is_refused_even_when_its_bytes_hash_right() -> None:
    parts = [os.urandom(CHUNK) for _ in range(3)]
    digest = digest_of(parts)

    got: list[bytes] = []
    with pytest.raises(errors.UpstreamError):
        async for chunk in verified(chunks_of(parts), digest, 3 * CHUNK + 1, "upstream"):
            got.append(chunk)
    assert got == parts[:-1]

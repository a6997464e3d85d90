"""A cache download's bytes kept in memory for readers at its head.

Bytes are readers' as they arrive, before they are on disk. A reader asks for bytes from an
offset up to a limit (the last byte waits for the digest); memory answers with exactly those
bytes as far as one chunk reaches, or not at all. It keeps every byte not yet on disk, and no
more than its bound of those that are.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from metahub.oci.digest import Digest
from metahub.serving.blobcache import RECENT_BYTES, _Download
from metahub.upstream.base import BlobStream, ByteRange

DIGEST = Digest.parse("sha256:" + "0" * 64)


async def _never(_window: ByteRange | None) -> BlobStream:
    raise AssertionError("no upstream here")


def download_of(chunks: list[bytes]) -> _Download:
    download = _Download(
        DIGEST,
        sum(map(len, chunks)),
        "application/octet-stream",
        Path("/nonexistent"),
        _never,
        "upstream",
    )
    for chunk in chunks:
        download.arrived(chunk)
        download.stored(chunk)
    return download


chunk_sizes = st.lists(st.integers(1, RECENT_BYTES // 3), min_size=1, max_size=12)


def blob_in_chunks(sizes: list[int]) -> tuple[bytes, list[bytes]]:
    """Random bytes, and the same cut into chunks of `sizes`."""
    blob = random.Random(sum(sizes)).randbytes(sum(sizes))
    chunks, offset = [], 0
    for size in sizes:
        chunks.append(blob[offset : offset + size])
        offset += size
    return blob, chunks


@settings(deadline=None)  # megabytes of chunks: their time depends on the machine's load
@given(sizes=chunk_sizes, data=st.data())
def test_memory_answers_exactly_the_bytes_asked_for_or_nothing(
    sizes: list[int], data: st.DataObject
) -> None:
    blob, chunks = blob_in_chunks(sizes)
    download = download_of(chunks)
    start = data.draw(st.integers(0, len(blob) - 1), label="offset")
    limit = data.draw(st.integers(start + 1, len(blob)), label="limit")

    got = download.recent_at(start, limit)

    kept_from = download.recent[0][0]
    assert download.written == len(blob)
    assert download.recent_bytes == sum(len(chunk) for _, chunk in download.recent)
    assert download.recent_bytes <= RECENT_BYTES or len(download.recent) == 1
    if start < kept_from:
        assert got is None
    else:
        assert got is not None and len(got) > 0
        assert got == blob[start : start + len(got)]
        assert start + len(got) <= limit


def test_a_whole_chunk_is_handed_on_as_it_is() -> None:
    chunks = [b"a" * 10, b"b" * 20, b"c" * 30]
    download = download_of(chunks)

    assert download.recent_at(10, 60) is chunks[1]
    assert download.recent_at(30, 59) == b"c" * 29  # the last byte held back


def test_readers_waiting_are_told_when_a_chunk_arrives() -> None:
    async def scenario() -> None:
        download = download_of([])
        waiting = asyncio.ensure_future(download.changed.wait())
        await asyncio.sleep(0)
        download.arrived(b"x")  # not on disk yet: theirs all the same
        await asyncio.wait_for(waiting, 1)

    asyncio.run(scenario())


@settings(deadline=None)
@given(sizes=chunk_sizes, data=st.data())
def test_memory_holds_every_byte_not_yet_on_disk(sizes: list[int], data: st.DataObject) -> None:
    """However far the disk is behind the upstream, a reader at any offset the disk has not
    reached finds its bytes in memory; what memory keeps beyond those stays within the bound."""
    blob, chunks = blob_in_chunks(sizes)
    on_disk = data.draw(st.integers(0, len(chunks)), label="chunks on disk")
    download = download_of([])
    download.size = total = len(blob)
    for chunk in chunks:
        download.arrived(chunk)
    for chunk in chunks[:on_disk]:
        download.stored(chunk)

    written = sum(map(len, chunks[:on_disk]))
    assert (download.written, download.received) == (written, total)
    assert b"".join(download.in_memory_from(written, total)) == blob[written:]
    for start in range(written, total, max(1, (total - written) // 7)):
        got = download.recent_at(start, total)
        assert got is not None and got == blob[start : start + len(got)]
    stored_in_memory = sum(len(c) for s, c in download.recent if s + len(c) <= written)
    assert stored_in_memory <= RECENT_BYTES or len(download.recent) == 1 + len(chunks) - on_disk

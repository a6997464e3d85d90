"""Reading files for responses without stalling the event loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

CHUNK_SIZE = 1024 * 1024


async def read_chunks(path: Path, offset: int, length: int) -> AsyncIterator[bytes]:
    """`length` bytes from `offset`, read in a thread so a cold disk never blocks serving."""
    fd = await asyncio.to_thread(os.open, path, os.O_RDONLY)
    try:
        while length > 0:
            chunk = await asyncio.to_thread(os.pread, fd, min(CHUNK_SIZE, length), offset)
            if not chunk:
                break
            offset += len(chunk)
            length -= len(chunk)
            yield chunk
    finally:
        os.close(fd)

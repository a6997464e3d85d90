"""Reading files for responses without stalling the event loop, and only from where they belong."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

CHUNK_SIZE = 1024 * 1024


class OutsideRoot(PermissionError):
    """A file whose path, links followed, leads out of the directory it was asked from."""


async def read_chunks(
    path: Path, offset: int, length: int, *, root: Path | None = None
) -> AsyncIterator[bytes]:
    """`length` bytes from `offset`, read in a thread so a cold disk never blocks serving.

    With `root`, the file is opened only when it lies inside `root` (see `open_within`).
    """
    if root is None:
        fd = await asyncio.to_thread(os.open, path, os.O_RDONLY)
    else:
        fd = await asyncio.to_thread(open_within, root, path)
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


def open_within(root: Path, path: Path) -> int:
    """A read-only descriptor of the regular file `path`, which must resolve inside `root`.

    Links are followed only while they stay inside `root`; a link to `/etc/passwd` in a
    directory served to clients raises OutsideRoot rather than handing the file out.
    """
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if not _inside(real_root, real):
        raise OutsideRoot(f"{path} leads outside {root}")
    # O_NOFOLLOW: the resolved path has no links left; one that appears now is a swap.
    # O_NONBLOCK: a FIFO planted in the directory must not hang the open.
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        opened = _opened_path(fd)  # what was opened, in case a directory was swapped meanwhile
        if opened is not None and not _inside(real_root, opened):
            raise OutsideRoot(f"{path} leads outside {root}")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileNotFoundError(f"{path} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_within(root: Path, path: Path) -> bytes:
    """The whole file `path`, which must resolve inside `root` (see `open_within`)."""
    fd = open_within(root, path)
    try:
        with os.fdopen(fd, "rb", closefd=False) as file:
            return file.read()
    finally:
        os.close(fd)


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _opened_path(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc here: the check before opening is all there is
        return None

"""The interface every upstream implements, and the values it returns."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from metahub.errors import RangeNotSatisfiable


@dataclass(frozen=True, slots=True)
class Manifest:
    """A manifest or index exactly as the upstream stored it."""

    data: bytes
    media_type: str
    digest: str
    stale: bool = False  # served from cache because the upstream could not be asked
    # The JSON object `data` holds, when the upstream read it to check it: passed on with a
    # fresh answer so that selection does not read it again, never cached (a parsed document
    # takes many times the memory of its bytes).
    document: dict[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ManifestHead:
    """What a HEAD tells about a manifest: enough to know whether a cached copy still holds."""

    digest: str
    media_type: str
    size: int


@dataclass(frozen=True, slots=True)
class ByteRange:
    """One `Range: bytes=...` request: first-last (inclusive), first- or the last `suffix`."""

    first: int | None
    last: int | None

    # At most 30 digits, far past any blob's size (a last byte beyond the end means "to the
    # end"): int() of thousands of digits raises, and a range it cannot read may be ignored.
    _RE = re.compile(r"^\s*bytes\s*=\s*([0-9]{0,30})\s*-\s*([0-9]{0,30})\s*$")

    @classmethod
    def parse(cls, header: str | None) -> ByteRange | None:
        """None when absent or not a single byte range: RFC 9110 lets us answer 200 then."""
        if not header:
            return None
        match = cls._RE.match(header)
        if match is None:
            return None
        first, last = match.groups()
        if not first and not last:
            return None
        if first and last and int(last) < int(first):
            return None
        return cls(int(first) if first else None, int(last) if last else None)

    def resolve(self, size: int) -> tuple[int, int]:
        """Absolute [start, end] for a blob of `size` bytes, or 416."""
        if self.first is None:
            suffix = self.last or 0
            if suffix == 0 or size == 0:
                raise self.unsatisfiable(size)
            return max(size - suffix, 0), size - 1
        if self.first >= size:
            raise self.unsatisfiable(size)
        end = size - 1 if self.last is None else min(self.last, size - 1)
        return self.first, end

    def header(self) -> str:
        return f"bytes={'' if self.first is None else self.first}-" + (
            "" if self.last is None else str(self.last)
        )

    @staticmethod
    def unsatisfiable(size: int) -> RangeNotSatisfiable:
        return RangeNotSatisfiable(
            f"requested range is not satisfiable: the blob has {size} bytes",
            headers={"Content-Range": f"bytes */{size}"},
        )


@dataclass(slots=True)
class BlobStream:
    """An open blob download; `chunks` must be consumed or `close()` called."""

    size: int
    media_type: str
    chunks: AsyncIterator[bytes]
    content_range: tuple[int, int] | None = None  # set when this is a 206 partial answer
    # Set when the upstream's redirect is handed to the client (`blobs.redirect: pass`): the
    # bytes are at this URL, and this stream has none.
    location: str | None = None
    # The local file that holds the blob (a cache hit): a server that can may send the bytes
    # from it with `sendfile` instead of reading `chunks`.
    file: Path | None = None

    @property
    def length(self) -> int:
        if self.content_range is None:
            return self.size
        return self.content_range[1] - self.content_range[0] + 1

    async def close(self) -> None:
        aclose = getattr(self.chunks, "aclose", None)
        if aclose is not None:
            await aclose()


@dataclass(frozen=True, slots=True)
class Referrers:
    data: bytes
    media_type: str
    filters_applied: str | None


class Upstream(Protocol):
    """Read-only access to repositories; every failure is a RegistryError naming the upstream."""

    description: str

    async def get_manifest(self, name: str, reference: str) -> Manifest: ...

    async def head_manifest(self, name: str, reference: str) -> ManifestHead | None:
        """None when the upstream cannot tell the digest without a GET."""
        ...

    async def open_blob(
        self,
        name: str,
        digest: str,
        byte_range: ByteRange | None = None,
        *,
        pass_redirect: bool = False,
    ) -> BlobStream:
        """The blob; with `pass_redirect`, an upstream that may redirect the client to where
        the bytes are instead returns a stream with only `location` set."""
        ...

    async def blob_size(self, name: str, digest: str) -> tuple[int, str]: ...

    async def tags(self, name: str) -> list[str]: ...

    async def referrers(self, name: str, digest: str, artifact_type: str | None) -> Referrers: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...

"""Which repositories are known to hold which blobs: bounded, least recently used forgotten."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

# Each pair costs about 150 bytes (a 16-byte key in an ordered dict): 200,000 pairs are ~30 MiB.
MAX_PAIRS = 200_000


class BlobHolders:
    """(repository, digest) pairs the upstream confirmed; a forgotten pair is only asked again."""

    def __init__(self, max_pairs: int = MAX_PAIRS) -> None:
        self.max_pairs = max_pairs
        self._pairs: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pairs)

    def __contains__(self, pair: tuple[str, str]) -> bool:
        key = _key(*pair)
        if key not in self._pairs:
            return False
        self._pairs.move_to_end(key)
        return True

    def add(self, name: str, digest: str) -> None:
        key = _key(name, digest)
        self._pairs[key] = None
        self._pairs.move_to_end(key)
        while len(self._pairs) > self.max_pairs:
            self._pairs.popitem(last=False)


def _key(name: str, digest: str) -> bytes:
    # A fixed-size hash instead of the two strings keeps memory per pair small and bounded.
    return hashlib.blake2b(f"{name}\0{digest}".encode(), digest_size=16).digest()

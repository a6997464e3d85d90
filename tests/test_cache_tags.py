"""The tag -> digest cache of CachingUpstream keeps the tags asked for last, no more.

The upstream is an OCI layout on disk with a counting wrapper: a tag still cached is answered
with no upstream call within its TTL; one pushed out is fetched again.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from metahub.oci.layout_writer import LayoutWriter
from metahub.upstream.base import Manifest, ManifestHead
from metahub.upstream.caching import CachingUpstream
from metahub.upstream.layout import OciLayoutUpstream
from tests.support.oci import OCI_CONFIG, OCI_MANIFEST

TAGS = ("one", "two", "three")


class Counting:
    """The layout upstream, counting the manifest requests that reach it."""

    def __init__(self, inner: OciLayoutUpstream) -> None:
        self.inner = inner
        self.description = inner.description
        self.asked: Counter[str] = Counter()

    async def get_manifest(self, name: str, reference: str) -> Manifest:
        self.asked[reference] += 1
        return await self.inner.get_manifest(name, reference)

    async def head_manifest(self, name: str, reference: str) -> ManifestHead | None:
        self.asked[reference] += 1
        return await self.inner.head_manifest(name, reference)

    async def close(self) -> None:
        await self.inner.close()


def layout(path: Path) -> OciLayoutUpstream:
    writer = LayoutWriter(path)
    for tag in TAGS:
        config = writer.add_json({"architecture": "amd64", "os": "linux", "tag": tag}, OCI_CONFIG)
        document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": []}
        writer.tag(f"app:{tag}", writer.add_blob(json.dumps(document).encode(), OCI_MANIFEST))
    writer.save()
    return OciLayoutUpstream(path)


async def test_only_the_tags_asked_last_stay_cached(tmp_path: Path) -> None:
    upstream = Counting(layout(tmp_path / "layout"))
    cache = CachingUpstream(upstream, tag_ttl=3600, tag_entries=2)
    for tag in TAGS:
        await cache.get_manifest("app", tag)
    assert upstream.asked == Counter(TAGS)
    await cache.get_manifest("app", "three")
    await cache.get_manifest("app", "two")
    assert upstream.asked == Counter(TAGS)  # both still cached: no upstream call
    await cache.get_manifest("app", "one")  # pushed out by "three": fetched again
    assert upstream.asked["one"] == 2
    await cache.close()

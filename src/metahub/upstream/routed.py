"""Several upstreams behind one Upstream: each call goes to the upstream its repository key names.

Keys are made by `Router.route` (`<registry>/<repository>`, or the plain name of a single
`upstream:`), so everything above (caches, single flight, selection, the filtered-digest store)
works on keys and never mixes two registries' repositories.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from metahub.upstream.base import BlobStream, ByteRange, Manifest, ManifestHead, Referrers, Upstream
from metahub.upstream.routing import Router


class RoutedUpstream:
    def __init__(self, router: Router, upstreams: Mapping[str, Upstream]) -> None:
        """`upstreams`: one Upstream per configured registry name."""
        self.router = router
        self.upstreams = dict(upstreams)
        if len(self.upstreams) == 1:
            self.description = next(iter(self.upstreams.values())).description
        else:
            self.description = "upstreams " + ", ".join(self.upstreams)

    def _for(self, key: str) -> tuple[Upstream, str]:
        upstream, repository = self.router.for_key(key)
        return self.upstreams[upstream.registry], repository

    async def get_manifest(self, name: str, reference: str) -> Manifest:
        upstream, repository = self._for(name)
        return await upstream.get_manifest(repository, reference)

    async def head_manifest(self, name: str, reference: str) -> ManifestHead | None:
        upstream, repository = self._for(name)
        return await upstream.head_manifest(repository, reference)

    async def open_blob(
        self,
        name: str,
        digest: str,
        byte_range: ByteRange | None = None,
        *,
        pass_redirect: bool = False,
    ) -> BlobStream:
        upstream, repository = self._for(name)
        return await upstream.open_blob(repository, digest, byte_range, pass_redirect=pass_redirect)

    async def blob_size(self, name: str, digest: str) -> tuple[int, str]:
        upstream, repository = self._for(name)
        return await upstream.blob_size(repository, digest)

    async def tags(self, name: str) -> list[str]:
        upstream, repository = self._for(name)
        return await upstream.tags(repository)

    async def referrers(self, name: str, digest: str, artifact_type: str | None) -> Referrers:
        upstream, repository = self._for(name)
        return await upstream.referrers(repository, digest, artifact_type)

    async def ping(self) -> None:
        """Fine while any upstream answers: one registry down leaves the others' pulls working,
        and every replica shares that registry's fate, so none should leave the balancer for it.
        When none answers, the first failure (naming its upstream) is raised."""
        results = await asyncio.gather(
            *(u.ping() for u in self.upstreams.values()), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if len(failures) == len(results) and failures:
            raise failures[0]

    async def close(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.close()

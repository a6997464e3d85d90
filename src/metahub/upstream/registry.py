"""An upstream OCI/Docker registry reached over HTTP(S) with aiohttp.

Authentication follows what the upstream asks for: a Bearer challenge makes us fetch a token for
the repository's pull scope (cached until shortly before it expires), a Basic challenge makes us
send the configured credentials. Every failure becomes a RegistryError whose message names the
upstream, so a client can tell our trouble from theirs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager

import aiohttp
import orjson

from metahub import errors, metrics
from metahub.client.auth import BasicCredentials, pull_scope
from metahub.client.errors import RegistryHttpError, Trouble
from metahub.client.http import RegistryConnection
from metahub.client.media import media_type_of
from metahub.client.retry import RetryPolicy
from metahub.client.urls import DOCKER_HUB_API, base_url
from metahub.oci import mediatypes
from metahub.oci.digest import Digest
from metahub.upstream.base import BlobStream, ByteRange, Manifest, ManifestHead, Referrers

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
CHUNK_SIZE = 256 * 1024


class _UpstreamMetrics:
    """Counts every upstream answer (or failure to get one) and every retry."""

    def answered(self, method: str, outcome: str) -> None:
        metrics.UPSTREAM.labels(method, outcome).inc()

    def retrying(self) -> None:
        metrics.UPSTREAM_RETRIES.inc()


class RegistryUpstream:
    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        insecure: bool = False,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.url = base_url(url, insecure=insecure)
        self.description = f"upstream {self.url}"
        self._docker_hub = self.url == DOCKER_HUB_API
        self._http = RegistryConnection(
            self.url,
            description=self.description,
            credentials=(
                BasicCredentials(username, password or "") if username is not None else None
            ),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=connect_timeout, sock_read=read_timeout
            ),
            retry=retry or RetryPolicy(),
            observer=_UpstreamMetrics(),
            connection_limit=256,
            chunk_size=CHUNK_SIZE,
        )

    async def close(self) -> None:
        await self._http.close()

    def repository(self, name: str) -> str:
        if self._docker_hub and "/" not in name:
            return f"library/{name}"
        return name

    # -- the Upstream interface ------------------------------------------------------------

    async def ping(self) -> None:
        async with await self._request("GET", "/v2/", scope=None) as response:
            if response.status != 200:
                raise self._unexpected(response, "/v2/")

    async def get_manifest(self, name: str, reference: str) -> Manifest:
        repo = self.repository(name)
        path = f"/v2/{repo}/manifests/{reference}"
        headers = {"Accept": mediatypes.UPSTREAM_ACCEPT}
        async with await self._request("GET", path, scope=repo, headers=headers) as response:
            if response.status == 404:
                raise errors.ManifestUnknown(
                    f"manifest {name}:{reference} is not known to {self.description}",
                    detail={"name": name, "reference": reference},
                )
            if response.status != 200:
                raise self._unexpected(response, path)
            data = await self._read_limited(response, MAX_MANIFEST_BYTES)
            media_type = media_type_of(response.headers.get("Content-Type"), data)
        digest = Digest.of(data)
        if ":" in reference:
            wanted = Digest.parse(reference)
            if wanted.algorithm != "sha256":
                digest = Digest.of(data, wanted.algorithm)
            if digest != wanted:
                raise errors.UpstreamError(
                    f"{self.description} served manifest bytes for {name}@{reference} "
                    f"whose digest is {digest}"
                )
        return Manifest(data, media_type, str(digest))

    async def head_manifest(self, name: str, reference: str) -> ManifestHead | None:
        repo = self.repository(name)
        path = f"/v2/{repo}/manifests/{reference}"
        headers = {"Accept": mediatypes.UPSTREAM_ACCEPT}
        async with await self._request("HEAD", path, scope=repo, headers=headers) as response:
            if response.status == 404:
                raise errors.ManifestUnknown(
                    f"manifest {name}:{reference} is not known to {self.description}",
                    detail={"name": name, "reference": reference},
                )
            if response.status != 200:
                raise self._unexpected(response, path)
            digest = response.headers.get("Docker-Content-Digest")
            size = _content_length(response.headers)
            if not digest or size is None:
                return None
            media_type = (response.headers.get("Content-Type") or "").split(";")[0].strip()
            return ManifestHead(digest, media_type, size)

    async def blob_size(self, name: str, digest: str) -> tuple[int, str]:
        repo = self.repository(name)
        path = f"/v2/{repo}/blobs/{digest}"
        async with await self._request("HEAD", path, scope=repo) as response:
            if response.status == 404:
                raise self._blob_unknown(name, digest)
            if response.status != 200:
                raise self._unexpected(response, path)
            size = _content_length(response.headers)
            if size is None:
                raise errors.UpstreamError(f"{self.description} sent no size for blob {digest}")
            return size, response.headers.get("Content-Type", "application/octet-stream")

    async def open_blob(
        self, name: str, digest: str, byte_range: ByteRange | None = None
    ) -> BlobStream:
        repo = self.repository(name)
        path = f"/v2/{repo}/blobs/{digest}"
        headers = {"Range": byte_range.header()} if byte_range else {}
        response = await self._request("GET", path, scope=repo, headers=headers)
        try:
            if response.status == 404:
                raise self._blob_unknown(name, digest)
            if response.status == 416:
                size = _total_from_content_range(response.headers.get("Content-Range"))
                raise ByteRange.unsatisfiable(size if size is not None else 0)
            if response.status not in (200, 206):
                raise self._unexpected(response, path)
            media_type = response.headers.get("Content-Type", "application/octet-stream")
            if response.status == 206:
                first, last, size = _parse_content_range(response.headers.get("Content-Range"))
                return BlobStream(size, media_type, self._stream(response), (first, last))
            size = _content_length(response.headers)
            if size is None:
                raise errors.UpstreamError(f"{self.description} sent no size for blob {digest}")
            if byte_range is None:
                return BlobStream(size, media_type, self._stream(response))
            # The upstream ignored our Range: cut the window out of the full body ourselves.
            first, last = byte_range.resolve(size)
            return BlobStream(
                size,
                media_type,
                self._stream(response, skip=first, take=last - first + 1),
                (first, last),
            )
        except BaseException:
            response.release()
            raise

    async def tags(self, name: str) -> list[str]:
        repo = self.repository(name)
        try:
            return await self._http.tags(f"/v2/{repo}/tags/list", scopes=(pull_scope(repo),))
        except RegistryHttpError as exc:
            if exc.trouble is Trouble.STATUS and exc.status == 404:
                raise errors.NameUnknown(
                    f"repository {name} is not known to {self.description}",
                    detail={"name": name},
                ) from exc
            raise self._error(exc) from exc

    async def referrers(self, name: str, digest: str, artifact_type: str | None) -> Referrers:
        repo = self.repository(name)
        path = f"/v2/{repo}/referrers/{digest}"
        params = {"artifactType": artifact_type} if artifact_type else None
        headers = {"Accept": mediatypes.OCI_INDEX}
        async with await self._request(
            "GET", path, scope=repo, headers=headers, params=params
        ) as response:
            if response.status in (404, 405, 400):
                # No referrers API upstream (distribution 2.8): nothing refers to anything.
                return Referrers(_EMPTY_INDEX, mediatypes.OCI_INDEX, None)
            if response.status != 200:
                raise self._unexpected(response, path)
            data = await self._read_limited(response, MAX_MANIFEST_BYTES)
            return Referrers(
                data, mediatypes.OCI_INDEX, response.headers.get("OCI-Filters-Applied")
            )

    # -- HTTP, with the client's failures in the upstream's words ----------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        scope: str | None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        scopes = (pull_scope(scope),) if scope is not None else ()
        with self._mapped():
            return await self._http.request(
                method, path, scopes=scopes, headers=headers, params=params
            )

    @contextmanager
    def _mapped(self) -> Iterator[None]:
        try:
            yield
        except RegistryHttpError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: RegistryHttpError) -> errors.RegistryError:
        match exc.trouble:
            case Trouble.TIMEOUT:
                return errors.UpstreamTimeout(exc.message)
            case Trouble.UNREACHABLE:
                return errors.UpstreamUnavailable(exc.message)
            case Trouble.UNAUTHORIZED:
                return errors.UpstreamError(
                    f"{self.description} refused MetaHub's credentials for "
                    f"{exc.method} {exc.target}"
                )
            case Trouble.TOKEN_REFUSED:
                return errors.UpstreamError(
                    f"{self.description} refused MetaHub's credentials at its token service "
                    f"{exc.target} ({exc.status})"
                )
            case Trouble.TOKEN_FAILED if exc.status is None:
                return errors.UpstreamUnavailable(exc.message)
            case Trouble.TOKEN_FAILED if exc.status == 429:
                return self._status_error(429, exc.retry_after, exc.target)
            case Trouble.STATUS:
                return self._status_error(exc.status or 502, exc.retry_after, exc.target)
        return errors.UpstreamError(exc.message)

    def _unexpected(self, response: aiohttp.ClientResponse, path: str) -> errors.RegistryError:
        return self._status_error(response.status, response.headers.get("Retry-After"), path)

    def _status_error(
        self, status: int, retry_after: str | None, path: str
    ) -> errors.RegistryError:
        if status == 429:
            return errors.TooManyRequests(
                f"{self.description} is rate-limiting requests",
                headers={"Retry-After": retry_after} if retry_after else None,
            )
        if status >= 500:
            return errors.UpstreamError(f"{self.description} answered {status} for {path}")
        return errors.UpstreamError(f"{self.description} answered {status} unexpectedly for {path}")

    def _blob_unknown(self, name: str, digest: str) -> errors.RegistryError:
        return errors.BlobUnknown(
            f"blob {digest} is not known to {self.description} in {name}",
            detail={"name": name, "digest": digest},
        )

    async def _read_limited(self, response: aiohttp.ClientResponse, limit: int) -> bytes:
        with self._mapped():
            return await self._http.read(response, limit)

    async def _stream(
        self, response: aiohttp.ClientResponse, *, skip: int = 0, take: int | None = None
    ) -> AsyncIterator[bytes]:
        chunks = self._http.stream(response, skip=skip, take=take)
        try:
            with self._mapped():
                async for chunk in chunks:
                    yield chunk
        finally:
            # A reader that stops early closes only this generator: the client's goes too.
            await chunks.aclose()
            response.release()


_EMPTY_INDEX = orjson.dumps(
    {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": []}
)


def _content_length(headers: Mapping[str, str]) -> int | None:
    value = headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _parse_content_range(header: str | None) -> tuple[int, int, int]:
    try:
        _unit, _, spec = (header or "").partition(" ")
        window, _, total = spec.partition("/")
        first, _, last = window.partition("-")
        return int(first), int(last), int(total)
    except ValueError as exc:
        raise errors.UpstreamError(f"upstream sent a bad Content-Range {header!r}") from exc


def _total_from_content_range(header: str | None) -> int | None:
    if header and "/" in header:
        total = header.rsplit("/", 1)[1]
        return int(total) if total.isdigit() else None
    return None

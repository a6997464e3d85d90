"""An upstream OCI/Docker registry reached over HTTP(S) with aiohttp.

Authentication follows what the upstream asks for: a Bearer challenge makes us fetch a token for
the repository's pull scope (cached until shortly before it expires), a Basic challenge makes us
send the configured credentials. Every failure becomes a RegistryError whose message names the
upstream, so a client can tell our trouble from theirs.

An upstream is not trusted to be well-behaved: JSON and headers of the wrong shape are a 502,
a whole answer (a blob's: its headers) has `request_timeout` seconds, a body must keep up
`min_rate`, and a redirect goes only to its own origin or to the `redirect_hosts`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeGuard

import aiohttp
import orjson
from yarl import URL

from metahub import errors, metrics
from metahub.client.auth import pull_scope
from metahub.client.credentials import BasicCredentials
from metahub.client.errors import RegistryHttpError, Trouble
from metahub.client.http import REDIRECTS, KeepRedirect, RegistryConnection
from metahub.client.media import media_type_of
from metahub.client.pace import MinimumRate
from metahub.client.redirects import RedirectPolicy, passable
from metahub.client.retry import RetryPolicy
from metahub.client.urls import DOCKER_HUB_API, base_url
from metahub.oci import mediatypes
from metahub.oci.digest import Digest, InvalidDigest
from metahub.oci.registries import DOCKER_HUB, registry_of_url
from metahub.upstream.base import BlobStream, ByteRange, Manifest, ManifestHead, Referrers

MAX_MANIFEST_BYTES = 4 * 1024 * 1024


class _UpstreamMetrics:
    """Counts every upstream answer (or failure to get one) and every retry, per registry."""

    def __init__(self, registry: str) -> None:
        self.registry = registry
        self._retries = metrics.UPSTREAM_RETRIES.labels(registry)

    def answered(self, method: str, outcome: str) -> None:
        metrics.UPSTREAM.labels(self.registry, method, outcome).inc()

    def retrying(self) -> None:
        self._retries.inc()


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
        min_rate: float = 64 * 1024,
        min_rate_window: float = 30.0,
        request_timeout: float = 60.0,
        redirect_hosts: Iterable[str] | None = None,
        registry: str | None = None,
        named: bool = False,
    ) -> None:
        url = self.url = base_url(url, insecure=insecure)
        # The registry as image references spell it; default: the URL's host[:port].
        self.registry = registry or registry_of_url(self.url)
        # `named` (one of several `upstreams`): messages name the registry, so an error says
        # which registry it came from; the URL says where that registry was asked.
        self.description = (
            f"upstream {self.registry} ({self.url})" if named else f"upstream {self.url}"
        )
        self._docker_hub = self.url == DOCKER_HUB_API or self.registry == DOCKER_HUB
        self._request_timeout = request_timeout
        self._redirects = RedirectPolicy.of(redirect_hosts)
        self._password = password
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
            observer=_UpstreamMetrics(self.registry),
            connection_limit=256,
            redirects=self._redirects,
            min_rate=MinimumRate(min_rate, min_rate_window) if min_rate > 0 else None,
        )

    async def close(self) -> None:
        await self._http.close()

    def repository(self, name: str) -> str:
        if self._docker_hub and "/" not in name:
            return f"library/{name}"
        return name

    # -- the Upstream interface ------------------------------------------------------------

    async def ping(self) -> None:
        async with (
            self._deadline("GET", "/v2/"),
            await self._request("GET", "/v2/", scope=None) as response,
        ):
            if response.status != 200:
                raise self._unexpected(response, "/v2/")

    async def get_manifest(self, name: str, reference: str) -> Manifest:
        repo = self.repository(name)
        path = f"/v2/{repo}/manifests/{reference}"
        async with self._deadline("GET", path):
            return await self._get_manifest(name, reference, repo, path)

    async def _get_manifest(self, name: str, reference: str, repo: str, path: str) -> Manifest:
        headers = {"Accept": mediatypes.UPSTREAM_ACCEPT}
        async with await self._request("GET", path, scope=repo, headers=headers) as response:
            if response.status == 404:
                raise self._manifest_unknown(name, reference)
            if response.status != 200:
                raise self._unexpected(response, path)
            data = await self._read_limited(response, MAX_MANIFEST_BYTES)
            media_type = media_type_of(response.headers.get("Content-Type"), data)
        document = _json_object(data)
        if document is None:
            at = "@" if ":" in reference else ":"
            raise errors.UpstreamError(
                f"{self.description} sent a manifest for {name}{at}{reference} "
                "that is not a JSON object"
            )
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
        return Manifest(data, media_type, str(digest), document=document)

    async def head_manifest(self, name: str, reference: str) -> ManifestHead | None:
        repo = self.repository(name)
        path = f"/v2/{repo}/manifests/{reference}"
        headers = {"Accept": mediatypes.UPSTREAM_ACCEPT}
        async with (
            self._deadline("HEAD", path),
            await self._request("HEAD", path, scope=repo, headers=headers) as response,
        ):
            if response.status == 404:
                raise self._manifest_unknown(name, reference)
            if response.status != 200:
                raise self._unexpected(response, path)
            digest = response.headers.get("Docker-Content-Digest")
            size = _content_length(response.headers)
            if not _is_digest(digest) or size is None:
                return None  # the GET, whose bytes give the digest, decides instead
            media_type = (response.headers.get("Content-Type") or "").split(";")[0].strip()
            return ManifestHead(digest, media_type, size)

    async def blob_size(self, name: str, digest: str) -> tuple[int, str]:
        repo = self.repository(name)
        path = f"/v2/{repo}/blobs/{digest}"
        async with (
            self._deadline("HEAD", path),
            await self._request("HEAD", path, scope=repo) as response,
        ):
            if response.status == 404:
                raise self._blob_unknown(name, digest)
            if response.status != 200:
                raise self._unexpected(response, path)
            size = _content_length(response.headers)
            if size is None:
                raise errors.UpstreamError(f"{self.description} sent no size for blob {digest}")
            return size, response.headers.get("Content-Type", "application/octet-stream")

    async def open_blob(
        self,
        name: str,
        digest: str,
        byte_range: ByteRange | None = None,
        *,
        pass_redirect: bool = False,
    ) -> BlobStream:
        repo = self.repository(name)
        path = f"/v2/{repo}/blobs/{digest}"
        headers = {"Range": byte_range.header()} if byte_range else {}
        keep = self._passable if pass_redirect else None
        async with self._deadline("GET", path):  # for the headers: the body must keep min_rate
            response = await self._request(
                "GET", path, scope=repo, headers=headers, keep_redirect=keep
            )
        try:
            if pass_redirect and response.status in REDIRECTS:  # kept: see _passable
                location = response.url.join(URL(response.headers["Location"]))
                response.release()
                return BlobStream(
                    0, "application/octet-stream", _no_chunks(), location=str(location)
                )
            if response.status == 404:
                raise self._blob_unknown(name, digest)
            if response.status == 416:
                size = _total_from_content_range(response.headers.get("Content-Range"))
                raise ByteRange.unsatisfiable(size if size is not None else 0)
            if response.status not in (200, 206):
                raise self._unexpected(response, path)
            media_type = response.headers.get("Content-Type", "application/octet-stream")
            if response.status == 206:
                first, last, size = self._content_range(response, byte_range)
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

    def _passable(self, location: URL, sent: Mapping[str, str]) -> bool:
        """Whether a blob redirect to `location` may go to the client as it is."""
        authorization = next((v for k, v in sent.items() if k.lower() == "authorization"), "")
        secrets = [authorization.partition(" ")[2], self._password or ""]
        return passable(self._redirects, self.url, location, secrets)

    async def tags(self, name: str) -> list[str]:
        repo = self.repository(name)
        path = f"/v2/{repo}/tags/list"
        try:
            async with self._deadline("GET", path):
                return await self._http.tags(path, scopes=(pull_scope(repo),))
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
        async with (
            self._deadline("GET", path),
            await self._request(
                "GET", path, scope=repo, headers=headers, params=params
            ) as response,
        ):
            if response.status in (404, 405, 400):
                # No referrers API upstream (distribution 2.8): nothing refers to anything.
                return Referrers(_EMPTY_INDEX, mediatypes.OCI_INDEX, None)
            if response.status != 200:
                raise self._unexpected(response, path)
            data = await self._read_limited(response, MAX_MANIFEST_BYTES)
            if not _is_json_object(data):
                raise errors.UpstreamError(
                    f"{self.description} sent referrers of {name}@{digest} "
                    "that are not a JSON object"
                )
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
        keep_redirect: KeepRedirect | None = None,
    ) -> aiohttp.ClientResponse:
        scopes = (pull_scope(scope),) if scope is not None else ()
        with self._mapped():
            return await self._http.request(
                method,
                path,
                scopes=scopes,
                headers=headers,
                params=params,
                keep_redirect=keep_redirect,
            )

    @asynccontextmanager
    async def _deadline(self, method: str, path: str) -> AsyncIterator[None]:
        """A whole answer within request_timeout: a trickle of headers or JSON ends too."""
        deadline = asyncio.timeout(self._request_timeout)
        try:
            async with deadline:
                yield
        except TimeoutError:
            if not deadline.expired():
                raise
            raise errors.UpstreamTimeout(
                f"{self.description} did not answer {method} {path} "
                f"within {self._request_timeout:g} s"
            ) from None

    @contextmanager
    def _mapped(self) -> Iterator[None]:
        try:
            yield
        except RegistryHttpError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: RegistryHttpError) -> errors.RegistryError:
        match exc.trouble:
            case Trouble.TIMEOUT | Trouble.TOO_SLOW:
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

    def _content_range(
        self, response: aiohttp.ClientResponse, asked: ByteRange | None
    ) -> tuple[int, int, int]:
        """A 206's window and total, which must be the window asked for (or, unasked, all)."""
        header = response.headers.get("Content-Range")
        first, last, size = _parse_content_range(header, self.description)
        try:
            wanted = asked.resolve(size) if asked is not None else (0, size - 1)
        except errors.RegistryError:
            wanted = None  # what was asked cannot be had from a blob that size
        if wanted != (first, last):
            raise errors.UpstreamError(
                f"{self.description} answered {asked.header() if asked else 'a request for all'}"
                f" of {response.url.path} with Content-Range {header!r}"
            )
        return first, last, size

    def _manifest_unknown(self, name: str, reference: str) -> errors.RegistryError:
        return errors.ManifestUnknown(
            f"manifest {name}:{reference} is not known to {self.description}",
            detail={"name": name, "reference": reference},
        )

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


async def _no_chunks() -> AsyncIterator[bytes]:
    return
    yield b""


def _is_digest(text: str | None) -> TypeGuard[str]:
    try:
        return text is not None and bool(Digest.parse(text))
    except InvalidDigest:
        return False


def _is_json_object(data: bytes) -> bool:
    return _json_object(data) is not None


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def _number(text: str | None) -> int | None:
    """A header's non-negative decimal number (ASCII digits only), or None."""
    text = (text or "").strip()
    return int(text) if text.isascii() and text.isdigit() else None


def _content_length(headers: Mapping[str, str]) -> int | None:
    return _number(headers.get("Content-Length"))


def _parse_content_range(header: str | None, description: str = "upstream") -> tuple[int, int, int]:
    """`bytes FIRST-LAST/TOTAL`, a window inside the total, or an UpstreamError."""
    unit, _, spec = (header or "").strip().partition(" ")
    window, _, total = spec.partition("/")
    first, _, last = window.partition("-")
    numbers = (_number(first), _number(last), _number(total))
    match numbers:
        case (int(start), int(end), int(size)) if unit == "bytes" and start <= end < size:
            return start, end, size
    raise errors.UpstreamError(f"{description} sent a bad Content-Range {header!r}")


def _total_from_content_range(header: str | None) -> int | None:
    if header and "/" in header:
        return _number(header.rsplit("/", 1)[1])
    return None

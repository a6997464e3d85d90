"""An upstream OCI/Docker registry reached over HTTP(S) with aiohttp.

Authentication follows what the upstream asks for: a Bearer challenge makes us fetch a token for
the repository's pull scope (cached until shortly before it expires), a Basic challenge makes us
send the configured credentials. Every failure becomes a RegistryError whose message names the
upstream, so a client can tell our trouble from theirs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from yarl import URL

from metahub import errors, metrics
from metahub.client.challenge import parse_challenge
from metahub.client.retry import RetryPolicy
from metahub.oci import mediatypes
from metahub.oci.digest import Digest
from metahub.upstream.base import BlobStream, ByteRange, Manifest, ManifestHead, Referrers

DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DOCKER_HUB_API = "https://registry-1.docker.io"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
CHUNK_SIZE = 256 * 1024
# A token is dropped this long before it expires so no request races its expiry.
TOKEN_EXPIRY_MARGIN = 10.0
RETRYABLE = frozenset({429, 500, 502, 503, 504})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5


def base_url(url: str, *, insecure: bool = False) -> str:
    """The upstream's API root: HTTPS unless loopback/localhost (as docker does) or insecure."""
    if "://" not in url:
        if _is_ipv6(url):
            url = f"[{url}]"
        host = urlsplit(f"//{url}").hostname or ""
        scheme = "http" if insecure or _is_loopback(host) else "https"
        url = f"{scheme}://{url}"
    parts = urlsplit(url)
    if (parts.hostname or "") in DOCKER_HUB_HOSTS:
        return DOCKER_HUB_API
    return url.rstrip("/")


def _is_ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        self._retry = retry or RetryPolicy()
        self.url = base_url(url, insecure=insecure)
        self.description = f"upstream {self.url}"
        self._docker_hub = self.url == DOCKER_HUB_API
        self._basic = aiohttp.BasicAuth(username, password or "") if username is not None else None
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._session: aiohttp.ClientSession | None = None
        self._tokens: dict[str, tuple[str, float]] = {}
        self._scheme: str | None = None  # "bearer" or "basic", once the upstream told us

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=256, ttl_dns_cache=300),
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

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
        path: str | None = f"/v2/{repo}/tags/list"
        found: list[str] = []
        while path:
            async with await self._request("GET", path, scope=repo) as response:
                if response.status == 404:
                    raise errors.NameUnknown(
                        f"repository {name} is not known to {self.description}",
                        detail={"name": name},
                    )
                if response.status != 200:
                    raise self._unexpected(response, path)
                body = orjson.loads(await self._read_limited(response, 64 * 1024 * 1024))
                found.extend(body.get("tags") or [])
                path = next_link(response.headers.get("Link"))
        return found

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

    # -- HTTP with authentication ----------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        scope: str | None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        url = path if path.startswith("http") else self.url + path
        for attempt in range(2):
            request_headers = dict(headers or {})
            authorization = await self._authorization(scope)
            if authorization:
                request_headers["Authorization"] = authorization
            response = await self._send(method, url, request_headers, params)
            if response.status != 401:
                return response
            if attempt == 1:
                response.release()
                break
            challenge = response.headers.get("WWW-Authenticate", "")
            response.release()
            if not await self._answer_challenge(challenge, scope, authorization):
                break
        raise errors.UpstreamError(
            f"{self.description} refused MetaHub's credentials for {method} {path}"
        )

    async def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        params: Mapping[str, str] | None,
    ) -> aiohttp.ClientResponse:
        """One request, retried on connection errors, 5xx and 429; never on another 4xx."""
        attempt = 0
        while True:
            try:
                response = await self._client().request(
                    method, url, headers=headers, params=params, allow_redirects=False
                )
            except TimeoutError as exc:
                # Not retried: a slow upstream is slower still when asked again.
                metrics.UPSTREAM.labels(method, "timeout").inc()
                raise errors.UpstreamTimeout(f"{self.description} timed out on {method}") from exc
            except aiohttp.ClientConnectionError as exc:
                metrics.UPSTREAM.labels(method, "unreachable").inc()
                delay = self._retry.delay(attempt, None)
                if delay is None:
                    raise errors.UpstreamUnavailable(
                        f"{self.description} is unreachable: {exc}"
                    ) from exc
            except aiohttp.ClientError as exc:
                metrics.UPSTREAM.labels(method, "error").inc()
                raise errors.UpstreamError(f"{self.description} failed: {exc}") from exc
            else:
                metrics.UPSTREAM.labels(method, str(response.status)).inc()
                if response.status in REDIRECTS and "Location" in response.headers:
                    return await self._follow(method, response, headers)
                if response.status not in RETRYABLE:
                    return response
                delay = self._retry.delay(attempt, response.headers.get("Retry-After"))
                if delay is None:
                    return response
                response.release()
            metrics.UPSTREAM_RETRIES.inc()
            await asyncio.sleep(delay)
            attempt += 1

    async def _follow(
        self, method: str, response: aiohttp.ClientResponse, headers: Mapping[str, str]
    ) -> aiohttp.ClientResponse:
        """Follow a redirect (S3, a CDN) without our credentials: they are for the registry.

        Every other header goes along: a `Range` must reach whoever serves the bytes.
        """
        location = str(response.url.join(URL(response.headers["Location"])))
        response.release()
        forwarded = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        for _ in range(MAX_REDIRECTS):
            try:
                followed = await self._client().request(
                    method, location, headers=forwarded, allow_redirects=False
                )
            except TimeoutError as exc:
                metrics.UPSTREAM.labels(method, "timeout").inc()
                raise errors.UpstreamTimeout(
                    f"{self.description}: redirect target timed out"
                ) from exc
            except aiohttp.ClientError as exc:
                metrics.UPSTREAM.labels(method, "unreachable").inc()
                raise errors.UpstreamUnavailable(
                    f"{self.description}: redirect target {location} failed: {exc}"
                ) from exc
            metrics.UPSTREAM.labels(method, str(followed.status)).inc()
            if followed.status not in REDIRECTS or "Location" not in followed.headers:
                return followed
            location = str(followed.url.join(URL(followed.headers["Location"])))
            followed.release()
        raise errors.UpstreamError(f"{self.description} redirected more than {MAX_REDIRECTS} times")

    async def _authorization(self, scope: str | None) -> str | None:
        if self._scheme == "basic" and self._basic is not None:
            return self._basic.encode()
        if self._scheme == "bearer":
            cached = self._tokens.get(_scope_key(scope))
            if cached and cached[1] > time.monotonic():
                return f"Bearer {cached[0]}"
        return None

    async def _answer_challenge(
        self, header: str, scope: str | None, sent: str | None = None
    ) -> bool:
        scheme, params = parse_challenge(header)
        if scheme == "basic":
            # Concurrent first requests all meet the challenge; only a refusal of the
            # credentials themselves ends it.
            if self._basic is None or (sent or "").startswith("Basic "):
                return False
            self._scheme = "basic"
            return True
        if scheme == "bearer" and "realm" in params:
            self._scheme = "bearer"
            await self._fetch_token(params, scope)
            return True
        return False

    async def _fetch_token(self, challenge: dict[str, str], scope: str | None) -> None:
        query = {"service": challenge["service"]} if "service" in challenge else {}
        if scope is not None:
            query["scope"] = f"repository:{scope}:pull"
        elif "scope" in challenge:
            query["scope"] = challenge["scope"]
        realm = challenge["realm"]
        try:
            async with self._client().get(realm, params=query, auth=self._basic) as response:
                if response.status in (401, 403):
                    raise errors.UpstreamError(
                        f"{self.description} refused MetaHub's credentials at its token "
                        f"service {realm} ({response.status})"
                    )
                if response.status != 200:
                    raise self._unexpected(response, realm)
                body: dict[str, Any] = orjson.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            raise errors.UpstreamUnavailable(
                f"{self.description}: token service {realm} failed: {exc}"
            ) from exc
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str):
            raise errors.UpstreamError(f"{self.description}: token service {realm} sent no token")
        lifetime = float(body.get("expires_in") or 60)
        expiry = time.monotonic() + max(lifetime - TOKEN_EXPIRY_MARGIN, 1.0)
        self._tokens[_scope_key(scope)] = (token, expiry)

    # -- helpers --------------------------------------------------------------------------

    def _unexpected(self, response: aiohttp.ClientResponse, path: str) -> errors.RegistryError:
        status = response.status
        if status == 429:
            retry_after = response.headers.get("Retry-After")
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
        data = bytearray()
        try:
            async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                data += chunk
                if len(data) > limit:
                    raise errors.UpstreamError(
                        f"{self.description} sent more than {limit} bytes for {response.url.path}"
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise errors.UpstreamError(f"{self.description} broke off a response: {exc}") from exc
        return bytes(data)

    async def _stream(
        self, response: aiohttp.ClientResponse, *, skip: int = 0, take: int | None = None
    ) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                if skip:
                    if len(chunk) <= skip:
                        skip -= len(chunk)
                        continue
                    chunk, skip = chunk[skip:], 0
                if take is not None:
                    if len(chunk) >= take:
                        yield chunk[:take]
                        return
                    take -= len(chunk)
                yield chunk
        finally:
            response.release()


_EMPTY_INDEX = orjson.dumps(
    {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": []}
)


def _scope_key(scope: str | None) -> str:
    return scope or ""


def media_type_of(header: str | None, data: bytes) -> str:
    """A manifest's media type from its Content-Type, or from the document when that is vague."""
    media_type = (header or "").split(";", 1)[0].strip()
    if media_type in mediatypes.MANIFEST_TYPES:
        return media_type
    # Some registries answer application/json; the document's own mediaType then decides.
    try:
        declared = orjson.loads(data).get("mediaType")
    except (orjson.JSONDecodeError, AttributeError):
        declared = None
    if isinstance(declared, str) and declared:
        return declared
    return media_type or mediatypes.OCI_MANIFEST


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


def next_link(header: str | None) -> str | None:
    if not header:
        return None
    for part in header.split(","):
        url, *params = part.split(";")
        for param in params:
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "rel" and value.strip().strip('"').lower() == "next":
                return url.strip().strip("<>")
    return None

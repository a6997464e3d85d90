"""A registry client that can read and push: what `metahub push` and `metahub inspect` use.

It follows the registry's challenge: a Bearer challenge makes it fetch a token for exactly the
scopes the request needs (`repository:<target>:pull,push`, plus `repository:<source>:pull` for a
cross-repository mount), sending the credentials to the token service; a Basic challenge makes it
send them with every request. URLs follow MetaHub's upstream rules: HTTPS unless the registry
is on loopback/localhost or `insecure` is set.

Manifests are pushed with the exact bytes given and read back as the registry stores them;
blobs are streamed in chunks, never held whole.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from yarl import URL

from metahub.client.challenge import parse_challenge
from metahub.client.retry import RetryPolicy
from metahub.images.members import Fetched
from metahub.oci import mediatypes
from metahub.oci.digest import Digest
from metahub.publish.credentials import Credentials
from metahub.upstream.registry import base_url, media_type_of, next_link

CHUNK_SIZE = 1024 * 1024
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
TOKEN_EXPIRY_MARGIN = 10.0
RETRYABLE = frozenset({429, 500, 502, 503, 504})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MANIFEST_ACCEPT = ", ".join(
    [
        mediatypes.OCI_INDEX,
        mediatypes.DOCKER_MANIFEST_LIST,
        mediatypes.OCI_MANIFEST,
        mediatypes.DOCKER_MANIFEST,
    ]
)

Body = bytes | Callable[[], AsyncIterator[bytes]]


class RegistryClientError(Exception):
    """A request the registry refused or could not answer; the message names the registry."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class BlobDownload:
    size: int
    chunks: AsyncIterator[bytes]


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


class RegistryClient:
    def __init__(
        self,
        host: str,
        credentials: Credentials | None = None,
        *,
        insecure: bool = False,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.host = host
        self.url = base_url(host, insecure=insecure)
        self.description = f"registry {host}"
        self.credentials = credentials
        self._basic = (
            aiohttp.BasicAuth(credentials.username, credentials.password)
            if credentials is not None
            else None
        )
        self._retry = retry or RetryPolicy(retries=2, base_delay=0.2, max_delay=5.0)
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._session: aiohttp.ClientSession | None = None
        self._scheme: str | None = None  # "bearer" or "basic", once the registry said
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self._challenge: dict[str, str] = {}

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, auto_decompress=False, raise_for_status=False
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- reading -------------------------------------------------------------------------

    async def manifest(
        self, repository: str, reference: str, *, accept: str = MANIFEST_ACCEPT
    ) -> Fetched:
        path = f"/v2/{repository}/manifests/{reference}"
        headers = {"Accept": accept}
        response = await self._request("GET", path, (pull_scope(repository),), headers=headers)
        async with response:
            if response.status == 404:
                raise RegistryClientError(
                    f"{repository}:{reference} is not in {self.description}", 404
                )
            await self._expect(response, (200,), f"GET {path}")
            data = await _read_limited(response, MAX_MANIFEST_BYTES, self.description)
            media_type = media_type_of(response.headers.get("Content-Type"), data)
        digest = Digest.of(data)
        if ":" in reference:
            wanted = Digest.parse(reference)
            if wanted.algorithm != digest.algorithm:
                digest = Digest.of(data, wanted.algorithm)
            if digest != wanted:
                raise RegistryClientError(
                    f"{self.description} sent bytes for {repository}@{reference} "
                    f"whose digest is {digest}"
                )
        return Fetched(data, media_type, str(digest))

    async def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest a tag or digest resolves to (HEAD), None when the registry has none."""
        path = f"/v2/{repository}/manifests/{reference}"
        headers = {"Accept": MANIFEST_ACCEPT}
        response = await self._request("HEAD", path, (pull_scope(repository),), headers=headers)
        async with response:
            if response.status == 404:
                return None
            await self._expect(response, (200,), f"HEAD {path}")
            digest = response.headers.get("Docker-Content-Digest")
        if digest:
            return digest
        return (await self.manifest(repository, reference)).digest

    async def blob_exists(self, repository: str, digest: str) -> bool:
        path = f"/v2/{repository}/blobs/{digest}"
        response = await self._request("HEAD", path, (pull_scope(repository),))
        async with response:
            if response.status == 404:
                return False
            await self._expect(response, (200,), f"HEAD {path}")
            return True

    async def open_blob(self, repository: str, digest: str) -> BlobDownload:
        path = f"/v2/{repository}/blobs/{digest}"
        response = await self._request("GET", path, (pull_scope(repository),))
        try:
            if response.status == 404:
                raise RegistryClientError(
                    f"blob {digest} is not in {repository} on {self.description}", 404
                )
            await self._expect(response, (200,), f"GET {path}")
            size = response.content_length
            if size is None:
                raise RegistryClientError(f"{self.description} sent no size for blob {digest}")
        except BaseException:
            response.release()
            raise
        return BlobDownload(size, _stream(response, self.description))

    async def blob(self, repository: str, digest: str, limit: int) -> bytes:
        download = await self.open_blob(repository, digest)
        if download.size > limit:
            await download.chunks.aclose()  # type: ignore[attr-defined]
            raise RegistryClientError(f"blob {digest} is larger than {limit} bytes")
        data = b"".join([chunk async for chunk in download.chunks])
        if Digest.of(data, Digest.parse(digest).algorithm) != Digest.parse(digest):
            raise RegistryClientError(f"{self.description} sent wrong bytes for blob {digest}")
        return data

    async def tags(self, repository: str) -> list[str]:
        path: str | None = f"/v2/{repository}/tags/list"
        found: list[str] = []
        while path:
            response = await self._request("GET", path, (pull_scope(repository),))
            async with response:
                await self._expect(response, (200,), f"GET {path}")
                body = orjson.loads(await _read_limited(response, 64 << 20, self.description))
                found.extend(body.get("tags") or [])
                path = next_link(response.headers.get("Link"))
        return found

    # -- writing -------------------------------------------------------------------------

    async def mount_blob(self, repository: str, digest: str, source: str) -> str | None:
        """Mount `digest` from `source` (same registry); None when mounted, else the URL of
        the upload the registry started instead (it refuses mounts it cannot do with 202)."""
        path = f"/v2/{repository}/blobs/uploads/"
        scopes = (push_scope(repository), pull_scope(source))
        params = {"mount": digest, "from": source}
        response = await self._request("POST", path, scopes, params=params)
        async with response:
            await self._expect(response, (201, 202), f"POST {path}?mount")
            if response.status == 201:
                return None
            return self._location(response)

    async def start_upload(self, repository: str) -> str:
        path = f"/v2/{repository}/blobs/uploads/"
        response = await self._request("POST", path, (push_scope(repository),))
        async with response:
            await self._expect(response, (202,), f"POST {path}")
            return self._location(response)

    async def finish_upload(
        self, repository: str, location: str, digest: str, size: int, body: Body
    ) -> None:
        """Send the whole blob in one PUT to the upload at `location` (a monolithic upload)."""
        url = URL(location)
        url = url.update_query({"digest": digest})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        response = await self._request(
            "PUT", str(url), (push_scope(repository),), headers=headers, body=body
        )
        async with response:
            await self._expect(response, (201,), f"PUT blob {digest} to {repository}")

    async def put_manifest(
        self, repository: str, reference: str, data: bytes, media_type: str
    ) -> str:
        """Push `data` exactly; returns its digest, checked against what the registry says."""
        path = f"/v2/{repository}/manifests/{reference}"
        headers = {"Content-Type": media_type}
        response = await self._request(
            "PUT", path, (push_scope(repository),), headers=headers, body=data
        )
        async with response:
            await self._expect(response, (201,), f"PUT {path}")
            announced = response.headers.get("Docker-Content-Digest")
        digest = str(Digest.of(data))
        if announced and announced != digest:
            raise RegistryClientError(
                f"{self.description} stored {repository}:{reference} as {announced}, "
                f"not as the pushed bytes' {digest}"
            )
        return digest

    # -- HTTP with authentication --------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        scopes: Iterable[str],
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        body: Body | None = None,
    ) -> aiohttp.ClientResponse:
        url = path if path.startswith(("http://", "https://")) else self.url + path
        scope_key = tuple(sorted(set(scopes)))
        for attempt in range(2):
            request_headers = dict(headers or {})
            authorization = self._authorization(scope_key)
            if authorization:
                request_headers["Authorization"] = authorization
            response = await self._send(method, url, request_headers, params, body)
            if response.status != 401:
                return response
            challenge = response.headers.get("WWW-Authenticate", "")
            detail = await _error_text(response)
            response.release()
            if attempt == 1 or not await self._answer(challenge, scope_key, authorization):
                who = f"as {self.credentials.username}" if self.credentials else "anonymously"
                raise RegistryClientError(
                    f"{self.description} refused {method} {_path(url)} {who}: {detail}", 401
                )
        raise AssertionError("unreachable")

    async def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        params: Mapping[str, str] | None,
        body: Body | None,
    ) -> aiohttp.ClientResponse:
        """One request; reads (GET, HEAD) are retried on connection errors, 5xx and 429."""
        attempt = 0
        idempotent = method in ("GET", "HEAD")
        while True:
            data: Any = body() if callable(body) else body
            try:
                response = await self._client().request(
                    method, url, headers=headers, params=params, data=data, allow_redirects=False
                )
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                delay = self._retry.delay(attempt, None) if idempotent else None
                if delay is None:
                    raise RegistryClientError(
                        f"{self.description} is unreachable ({method} {_path(url)}): "
                        f"{exc or type(exc).__name__}"
                    ) from exc
            except aiohttp.ClientError as exc:
                raise RegistryClientError(f"{self.description} failed: {exc}") from exc
            else:
                if response.status in REDIRECTS and "Location" in response.headers:
                    return await self._follow(method, response)
                if response.status not in RETRYABLE or not idempotent:
                    return response
                delay = self._retry.delay(attempt, response.headers.get("Retry-After"))
                if delay is None:
                    return response
                response.release()
            await asyncio.sleep(delay)
            attempt += 1

    async def _follow(
        self, method: str, response: aiohttp.ClientResponse
    ) -> aiohttp.ClientResponse:
        """Blob redirects (object storage, a CDN) are followed without our credentials."""
        location = response.url.join(URL(response.headers["Location"]))
        response.release()
        for _ in range(5):
            try:
                followed = await self._client().request(method, location, allow_redirects=False)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise RegistryClientError(
                    f"{self.description}: redirect to {location} failed: {exc}"
                ) from exc
            if followed.status not in REDIRECTS or "Location" not in followed.headers:
                return followed
            location = followed.url.join(URL(followed.headers["Location"]))
            followed.release()
        raise RegistryClientError(f"{self.description} redirected too often")

    def _authorization(self, scope_key: tuple[str, ...]) -> str | None:
        if self._scheme == "basic" and self._basic is not None:
            return self._basic.encode()
        if self._scheme == "bearer":
            now = time.monotonic()
            cached = self._tokens.get(scope_key)
            if cached and cached[1] > now:
                return f"Bearer {cached[0]}"
            # A token for more scopes serves too: the PUT that ends a mount-started upload
            # needs only the push scope the mount's token already holds.
            wanted = set(scope_key)
            for key, (token, expiry) in self._tokens.items():
                if expiry > now and wanted <= set(key):
                    return f"Bearer {token}"
        return None

    async def _answer(self, header: str, scope_key: tuple[str, ...], sent: str | None) -> bool:
        """Whether the challenge can be met (concurrent requests may all meet one at once)."""
        scheme, params = parse_challenge(header)
        if scheme == "basic":
            if self._basic is None or (sent or "").startswith("Basic "):
                return False  # no credentials, or these very ones were refused
            self._scheme = "basic"
            return True
        if scheme == "bearer" and "realm" in params:
            self._scheme = "bearer"
            self._challenge = params
            await self._fetch_token(params, scope_key)
            return True
        return False

    async def _fetch_token(self, challenge: dict[str, str], scope_key: tuple[str, ...]) -> None:
        query: list[tuple[str, str]] = []
        if "service" in challenge:
            query.append(("service", challenge["service"]))
        for scope in scope_key or ((challenge["scope"],) if "scope" in challenge else ()):
            query.append(("scope", scope))
        if self.credentials is not None:
            query.append(("account", self.credentials.username))
        realm = challenge["realm"]
        try:
            async with self._client().get(realm, params=query, auth=self._basic) as response:
                if response.status in (401, 403):
                    raise RegistryClientError(
                        f"{self.description}: its token service {realm} refused "
                        f"{'the credentials' if self._basic else 'an anonymous login'} "
                        f"({response.status})",
                        response.status,
                    )
                if response.status != 200:
                    raise RegistryClientError(
                        f"{self.description}: token service {realm} answered {response.status}"
                    )
                body = orjson.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            raise RegistryClientError(
                f"{self.description}: token service {realm} failed: {exc}"
            ) from exc
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str):
            raise RegistryClientError(f"{self.description}: token service {realm} sent no token")
        lifetime = float(body.get("expires_in") or 60)
        expiry = time.monotonic() + max(lifetime - TOKEN_EXPIRY_MARGIN, 1.0)
        self._tokens[scope_key] = (token, expiry)

    # -- helpers -------------------------------------------------------------------------

    def _location(self, response: aiohttp.ClientResponse) -> str:
        location = response.headers.get("Location")
        if not location:
            raise RegistryClientError(f"{self.description} started an upload without a Location")
        return str(response.url.join(URL(location)))

    async def _expect(
        self, response: aiohttp.ClientResponse, statuses: tuple[int, ...], what: str
    ) -> None:
        if response.status in statuses:
            return
        detail = await _error_text(response)
        raise RegistryClientError(
            f"{self.description} answered {response.status} to {what}: {detail}", response.status
        )


async def _error_text(response: aiohttp.ClientResponse) -> str:
    """The registry's own words from an error body, or the status reason."""
    try:
        body = orjson.loads(await response.content.read(64 * 1024))
        parts = [
            f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
            for error in body.get("errors", [])
            if isinstance(error, dict)
        ]
        if parts:
            return "; ".join(parts)
    except (orjson.JSONDecodeError, AttributeError, aiohttp.ClientError, TimeoutError):
        pass
    return response.reason or str(response.status)


async def _read_limited(response: aiohttp.ClientResponse, limit: int, who: str) -> bytes:
    data = bytearray()
    try:
        async for chunk in response.content.iter_chunked(CHUNK_SIZE):
            data += chunk
            if len(data) > limit:
                raise RegistryClientError(f"{who} sent more than {limit} bytes")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise RegistryClientError(f"{who} broke off a response: {exc}") from exc
    return bytes(data)


async def _stream(response: aiohttp.ClientResponse, who: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.content.iter_chunked(CHUNK_SIZE):
            yield chunk
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise RegistryClientError(f"{who} broke off a download: {exc}") from exc
    finally:
        response.release()


def _path(url: str) -> str:
    return URL(url).path

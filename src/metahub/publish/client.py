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

from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import aiohttp
from yarl import URL

from metahub.client.auth import pull_scope, push_scope
from metahub.client.credentials import BasicCredentials
from metahub.client.errors import RegistryHttpError
from metahub.client.http import Body, RegistryConnection
from metahub.client.media import media_type_of
from metahub.client.retry import RetryPolicy
from metahub.client.urls import base_url
from metahub.images.errors import ImageError
from metahub.images.members import Fetched
from metahub.oci import mediatypes
from metahub.oci.digest import Digest

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MANIFEST_ACCEPT = ", ".join(
    [
        mediatypes.OCI_INDEX,
        mediatypes.DOCKER_MANIFEST_LIST,
        mediatypes.OCI_MANIFEST,
        mediatypes.DOCKER_MANIFEST,
    ]
)

__all__ = [
    "MANIFEST_ACCEPT",
    "BlobDownload",
    "Body",
    "RegistryClient",
    "RegistryClientError",
    "pull_scope",
    "push_scope",
]


class RegistryClientError(ImageError):
    """A request the registry refused or could not answer; the message names the registry."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class BlobDownload:
    size: int
    chunks: AsyncIterator[bytes]


class RegistryClient:
    def __init__(
        self,
        host: str,
        credentials: BasicCredentials | None = None,
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
        self._http = RegistryConnection(
            self.url,
            description=self.description,
            credentials=credentials,
            account=credentials.login if credentials is not None else None,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=connect_timeout, sock_read=read_timeout
            ),
            retry=retry or RetryPolicy(retries=2, base_delay=0.2, max_delay=5.0),
            # A push is not in a client's way: a read that timed out is worth another try.
            retry_timeouts=True,
        )

    async def close(self) -> None:
        await self._http.close()

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
            data = await self._read_limited(response, MAX_MANIFEST_BYTES)
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
        return BlobDownload(size, self._stream(response))

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
        with _mapped():
            return await self._http.tags(
                f"/v2/{repository}/tags/list", scopes=(pull_scope(repository),)
            )

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

    # -- HTTP, with the client's failures as RegistryClientError ---------------------------

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
        with _mapped():
            return await self._http.request(
                method, path, scopes=scopes, headers=headers, params=params, body=body
            )

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
        with _mapped():
            raise await self._http.unexpected(response, what)

    async def _read_limited(self, response: aiohttp.ClientResponse, limit: int) -> bytes:
        with _mapped():
            return await self._http.read(response, limit)

    async def _stream(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        chunks = self._http.stream(response)
        try:
            with _mapped():
                async for chunk in chunks:
                    yield chunk
        finally:
            # A reader that stops early closes only this generator: the client's goes too.
            await chunks.aclose()
            response.release()


@contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except RegistryHttpError as exc:
        raise RegistryClientError(exc.message, exc.status) from exc

"""One registry over HTTP(S): authenticated requests, retries, redirects and `Link` pages.

Credentials go only to the registry's own origin (scheme, host and port of its URL): a
redirect or a `Link` to anywhere else is followed without `Authorization`, and so is one from
HTTPS down to HTTP. With a RedirectPolicy, a redirect goes only where the policy allows; with a
MinimumRate, a body that trickles in ends with an error. Reads (GET, HEAD) are retried on
connection errors, 5xx and 429 as the RetryPolicy says; writes never are. Every failure is a
RegistryHttpError.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Protocol, Self

import aiohttp
import orjson
from yarl import URL

from metahub.client import bodies
from metahub.client.auth import Authenticator, scope_key
from metahub.client.credentials import BasicCredentials
from metahub.client.errors import RegistryHttpError, Trouble
from metahub.client.links import next_link
from metahub.client.pace import MinimumRate
from metahub.client.redirects import RedirectPolicy
from metahub.client.retry import RetryPolicy
from metahub.client.urls import same_origin

RETRYABLE = frozenset({429, 500, 502, 503, 504})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
READS = frozenset({"GET", "HEAD"})
MAX_REDIRECTS = 5
MAX_PAGES = 1000
MAX_TAGS = 100_000
MAX_TAGS_PAGE_BYTES = 64 * 1024 * 1024

Body = bytes | Callable[[], AsyncIterator[bytes]]
# Told where a redirect leads (and what the request carried); True: the redirect itself is
# the answer, unfollowed and unreleased, for the caller to hand on.
KeepRedirect = Callable[[URL, Mapping[str, str]], bool]


class Observer(Protocol):
    """Told about every answer (or failure to get one) and every retry, e.g. for metrics."""

    def answered(self, method: str, outcome: str) -> None:
        """`outcome` is the status, or "timeout", "unreachable" or "error"."""

    def retrying(self) -> None: ...


class _Unobserved:
    def answered(self, method: str, outcome: str) -> None:
        pass

    def retrying(self) -> None:
        pass


class RegistryConnection:
    """A registry at `url` (an API root such as urls.base_url gives), with one ClientSession."""

    def __init__(
        self,
        url: str,
        *,
        description: str,
        credentials: BasicCredentials | None = None,
        account: str | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
        retry: RetryPolicy | None = None,
        retry_timeouts: bool = False,
        observer: Observer | None = None,
        connection_limit: int = 100,
        trust_env: bool = False,
        headers: Mapping[str, str] | None = None,
        redirects: RedirectPolicy | None = None,
        min_rate: MinimumRate | None = None,
    ) -> None:
        self.url = url
        self.auth = Authenticator(url, description, credentials, account=account)
        self._timeout = timeout or aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
        self._retry = retry or RetryPolicy()
        # A slow registry is slower still when asked again: timeouts are retried only on request.
        self._retry_timeouts = retry_timeouts
        self._observer: Observer = observer or _Unobserved()
        self._connection_limit = connection_limit
        self._trust_env = trust_env
        self._headers = dict(headers or {})
        self._redirects = redirects  # None: follow a redirect anywhere
        self._min_rate = min_rate
        self._session: aiohttp.ClientSession | None = None

    @property
    def description(self) -> str:
        return self.auth.description

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._connection_limit, ttl_dns_cache=300),
                auto_decompress=False,
                trust_env=self._trust_env,
                headers=self._headers,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def is_own(self, url: str | URL) -> bool:
        """Whether `url` is on the registry's own origin, where its credentials may go."""
        return same_origin(url, self.url)

    def resolve(self, target: str) -> str:
        """A path below the API root, or an absolute URL, as a URL."""
        return target if target.startswith(("http://", "https://")) else self.url + target

    # -- requests ------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        target: str,
        *,
        scopes: Iterable[str] = (),
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        body: Body | None = None,
        keep_redirect: KeepRedirect | None = None,
    ) -> aiohttp.ClientResponse:
        """`target` with the registry's credentials, meeting one challenge if it asks.

        Any status but a 401 is the caller's to judge; a 401 that cannot be met is an error.
        """
        url = self.resolve(target)
        self._parsed(url, "a URL")
        key = scope_key(scopes)
        own = self.is_own(url)
        for attempt in range(2):
            request_headers = dict(headers or {})
            authorization = self.auth.authorization(key) if own else None
            if authorization:
                request_headers["Authorization"] = authorization
            response = await self.send(
                method,
                url,
                headers=request_headers,
                params=params,
                body=body,
                keep_redirect=keep_redirect,
            )
            if response.status != 401:
                return response
            challenge = response.headers.get("WWW-Authenticate", "")
            detail = await bodies.error_text(response)
            response.release()
            if (
                attempt == 1
                or not own
                or not await self.auth.answer(self.session(), challenge, key, authorization)
            ):
                break
        who = f"as {self.auth.credentials.login}" if self.auth.credentials else "anonymously"
        raise RegistryHttpError(
            Trouble.UNAUTHORIZED,
            f"{self.description} refused {method} {URL(url).path} {who}: {detail}",
            status=401,
            method=method,
            target=target,
            detail=detail,
        )

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
        body: Body | None = None,
        keep_redirect: KeepRedirect | None = None,
    ) -> aiohttp.ClientResponse:
        """One request as given, retried if it is a read; redirects are followed unless
        `keep_redirect` says to keep one."""
        attempt = 0
        read = method in READS
        while True:
            data: Any = body() if callable(body) else body
            try:
                response = await self.session().request(
                    method, url, headers=headers, params=params, data=data, allow_redirects=False
                )
            except TimeoutError as exc:
                self._observer.answered(method, "timeout")
                delay = self._retry.delay(attempt, None) if read and self._retry_timeouts else None
                if delay is None:
                    raise self._timed_out(method, url, exc) from exc
            except aiohttp.ClientConnectionError as exc:
                self._observer.answered(method, "unreachable")
                delay = self._retry.delay(attempt, None) if read else None
                if delay is None:
                    raise self._unreachable(method, url, exc) from exc
            except aiohttp.ClientError as exc:
                self._observer.answered(method, "error")
                raise RegistryHttpError(
                    Trouble.FAILED,
                    f"{self.description} failed: {exc}",
                    method=method,
                    target=url,
                    detail=str(exc),
                ) from exc
            else:
                self._observer.answered(method, str(response.status))
                if response.status in REDIRECTS and "Location" in response.headers:
                    if keep_redirect is not None and keep_redirect(
                        self._location(response), headers
                    ):
                        return response
                    return await self._follow(method, response, headers)
                if response.status not in RETRYABLE or not read:
                    return response
                delay = self._retry.delay(attempt, response.headers.get("Retry-After"))
                if delay is None:
                    return response
                response.release()
            self._observer.retrying()
            await asyncio.sleep(delay)
            attempt += 1

    async def _follow(
        self, method: str, response: aiohttp.ClientResponse, headers: Mapping[str, str]
    ) -> aiohttp.ClientResponse:
        """Follow a redirect (object storage, a CDN); credentials only to the registry itself.

        The other headers go along: a `Range` must reach whoever serves the bytes.
        """
        location = self._location(response)
        response.release()
        for _ in range(MAX_REDIRECTS):
            self._check_redirect(method, response.url, location)
            forwarded = {
                name: value
                for name, value in headers.items()
                if name.lower() != "content-length"
                and (name.lower() != "authorization" or self.is_own(location))
            }
            try:
                followed = await self.session().request(
                    method, location, headers=forwarded, allow_redirects=False
                )
            except TimeoutError as exc:
                self._observer.answered(method, "timeout")
                raise self._timed_out(method, str(location), exc) from exc
            except aiohttp.ClientError as exc:
                self._observer.answered(method, "unreachable")
                raise self._unreachable(method, str(location), exc) from exc
            self._observer.answered(method, str(followed.status))
            if followed.status not in REDIRECTS or "Location" not in followed.headers:
                return followed
            location = self._location(followed)
            response = followed
            followed.release()
        raise RegistryHttpError(
            Trouble.REDIRECTS,
            f"{self.description} redirected more than {MAX_REDIRECTS} times",
            method=method,
            target=str(location),
        )

    def _location(self, response: aiohttp.ClientResponse) -> URL:
        """Where a redirect leads, relative to where it came from."""
        location = response.headers["Location"]
        try:
            return response.url.join(self._parsed(location, "a redirect"))
        except RegistryHttpError:
            response.release()
            raise

    def _parsed(self, url: str, what: str) -> URL:
        """`url` as a URL, or an error naming the registry that sent it (ports, IPv6 brackets)."""
        try:
            parsed = URL(url)
            _ = parsed.port  # a port out of range shows only when asked for
        except ValueError as exc:
            raise RegistryHttpError(
                Trouble.MALFORMED,
                f"{self.description} sent {what} that is not a URL: {url!r} ({exc})",
                target=url,
            ) from exc
        return parsed

    def _check_redirect(self, method: str, source: URL, location: URL) -> None:
        if self._redirects is None or self._redirects.allows(self.url, location):
            return
        raise RegistryHttpError(
            Trouble.REDIRECT_REFUSED,
            f"{self.description} redirected {method} {source.path} to "
            f"{location.scheme}://{location.host}:{location.port}, a host it may not send us to",
            method=method,
            target=str(location),
        )

    def _timed_out(self, method: str, url: str, exc: BaseException) -> RegistryHttpError:
        where = "" if self.is_own(url) else f" at its redirect target {url}"
        return RegistryHttpError(
            Trouble.TIMEOUT,
            f"{self.description} timed out on {method} {URL(url).path}{where}",
            method=method,
            target=url,
            detail=str(exc) or "timed out",
        )

    def _unreachable(self, method: str, url: str, exc: BaseException) -> RegistryHttpError:
        where = "" if self.is_own(url) else f" at its redirect target {url}"
        return RegistryHttpError(
            Trouble.UNREACHABLE,
            f"{self.description} is unreachable ({method} {URL(url).path}{where}): "
            f"{exc or type(exc).__name__}",
            method=method,
            target=url,
            detail=_reason(exc),
        )

    # -- answers -------------------------------------------------------------------------

    async def read(self, response: aiohttp.ClientResponse, limit: int) -> bytes:
        return await bodies.read_limited(response, limit, self.description, self._min_rate)

    def stream(
        self, response: aiohttp.ClientResponse, *, skip: int = 0, take: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        return bodies.stream(response, self.description, skip=skip, take=take, rate=self._min_rate)

    async def unexpected(self, response: aiohttp.ClientResponse, what: str) -> RegistryHttpError:
        """The error for an answer whose status `what` (e.g. `GET /v2/x`) did not expect."""
        detail = await bodies.error_text(response)
        return RegistryHttpError(
            Trouble.STATUS,
            f"{self.description} answered {response.status} to {what}: {detail}",
            status=response.status,
            target=response.url.path,
            detail=detail,
            retry_after=response.headers.get("Retry-After"),
        )

    async def tags(self, path: str, *, scopes: Iterable[str] = ()) -> list[str]:
        """Every tag of a `tags/list`, page by page as `Link` says.

        A page that is not a 200 raises its unexpected() error; pages that loop, or more than
        MAX_PAGES pages or MAX_TAGS tags, end with an error instead of going on.
        """
        target = self.resolve(path)
        visited = {target}
        found: list[str] = []
        for _ in range(MAX_PAGES):
            async with await self.request("GET", target, scopes=scopes) as response:
                if response.status != 200:
                    raise await self.unexpected(response, f"GET {URL(target).path}")
                page = await self.read(response, MAX_TAGS_PAGE_BYTES)
                link = next_link(response.headers.get("Link"))
            found.extend(self._tags_of(page, target))
            if len(found) > MAX_TAGS:
                raise self._pages(f"listed more than {MAX_TAGS} tags for {path}", target)
            if link is None:
                return found
            target = self._next_page(link, response.url)
            if target in visited:
                raise self._pages(f"sent a Link that loops back to {target}", target)
            visited.add(target)
        raise self._pages(f"sent more than {MAX_PAGES} pages of tags for {path}", target)

    def _tags_of(self, page: bytes, target: str) -> list[str]:
        """The page's tags; `"tags": null` (an empty repository, for some registries) is none."""
        try:
            body = orjson.loads(page)
        except orjson.JSONDecodeError as exc:
            raise self._malformed_tags(target, f"that is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise self._malformed_tags(target, "that is not a JSON object")
        tags = body.get("tags")
        if tags is None:
            return []
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            raise self._malformed_tags(target, "whose `tags` is not a list of strings")
        return tags

    def _malformed_tags(self, target: str, says: str) -> RegistryHttpError:
        return RegistryHttpError(
            Trouble.MALFORMED,
            f"{self.description} sent a tag list for GET {URL(target).path} {says}",
            method="GET",
            target=target,
        )

    def _next_page(self, link: str, current: URL) -> str:
        self._parsed(link, "a next page")
        if link.startswith(("http://", "https://")):
            return link
        if link.startswith("/"):
            return self.url + link if not link.startswith("//") else str(current.join(URL(link)))
        return str(current.join(URL(link)))

    def _pages(self, says: str, target: str) -> RegistryHttpError:
        return RegistryHttpError(
            Trouble.PAGES, f"{self.description} {says}", method="GET", target=target
        )


def _reason(exc: BaseException) -> str:
    """`Connection refused` rather than asyncio's `Connect call failed ('127.0.0.1', 9)`."""
    if isinstance(exc, aiohttp.ClientConnectorError) and exc.os_error.errno:
        return os.strerror(exc.os_error.errno)
    return str(exc) or type(exc).__name__

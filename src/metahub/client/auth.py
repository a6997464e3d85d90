"""Meeting a registry's challenge: Basic credentials, or a Bearer token for the scopes needed.

Tokens are cached by the set of scopes they were issued for, and dropped a little before
they expire so no request races the expiry. A token issued for more scopes serves a request
that needs fewer (the PUT that ends a mount-started upload needs only the push scope the
mount's token holds).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import aiohttp
import orjson
from yarl import URL

from metahub.client.bodies import read_limited, read_prefix
from metahub.client.challenge import parse_challenge
from metahub.client.credentials import BasicCredentials
from metahub.client.errors import RegistryHttpError, Trouble

# A token is dropped this long before it expires so no request races its expiry.
TOKEN_EXPIRY_MARGIN = 10.0
DEFAULT_TOKEN_LIFETIME = 60.0
TOKEN_BODY_LIMIT = 1024 * 1024

ScopeKey = tuple[str, ...]


def scope_key(scopes: Iterable[str]) -> ScopeKey:
    return tuple(sorted(set(scopes)))


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


class TokenCache:
    """Bearer tokens by the scopes they were issued for, until shortly before they expire."""

    def __init__(self, margin: float = TOKEN_EXPIRY_MARGIN) -> None:
        self._margin = margin
        self._tokens: dict[ScopeKey, tuple[str, float]] = {}

    def get(self, key: ScopeKey) -> str | None:
        now = time.monotonic()
        cached = self._tokens.get(key)
        if cached and cached[1] > now:
            return cached[0]
        wanted = set(key)
        for scopes, (token, expiry) in self._tokens.items():
            if expiry > now and wanted <= set(scopes):
                return token
        return None

    def put(self, key: ScopeKey, token: str, lifetime: float) -> None:
        expiry = time.monotonic() + max(lifetime - self._margin, 1.0)
        self._tokens[key] = (token, expiry)


@dataclass(eq=False)
class Authenticator:
    """What to send as `Authorization`, learnt from the registry's first challenge."""

    registry: str
    description: str
    credentials: BasicCredentials | None = None
    # Sent to the token service, as docker does, when set.
    account: str | None = field(default=None, kw_only=True)
    tokens: TokenCache = field(default_factory=TokenCache, init=False)
    # "bearer" or "basic", once the registry said.
    _scheme: str | None = field(default=None, init=False)

    def authorization(self, key: ScopeKey) -> str | None:
        if self._scheme == "basic" and self.credentials is not None:
            return self.credentials.header()
        if self._scheme == "bearer":
            token = self.tokens.get(key)
            if token is not None:
                return f"Bearer {token}"
        return None

    async def answer(
        self, session: aiohttp.ClientSession, header: str, key: ScopeKey, sent: str | None
    ) -> bool:
        """Whether the challenge can be met (concurrent requests may all meet one at once)."""
        scheme, params = parse_challenge(header)
        if scheme == "basic":
            if self.credentials is None or (sent or "").startswith("Basic "):
                return False  # no credentials, or these very ones were refused
            self._scheme = "basic"
            return True
        if scheme == "bearer" and "realm" in params:
            self._scheme = "bearer"
            await self._fetch_token(session, params, key)
            return True
        return False

    async def _fetch_token(
        self, session: aiohttp.ClientSession, challenge: dict[str, str], key: ScopeKey
    ) -> None:
        query: list[tuple[str, str]] = []
        if "service" in challenge:
            query.append(("service", challenge["service"]))
        for scope in key or ((challenge["scope"],) if "scope" in challenge else ()):
            query.append(("scope", scope))
        if self.account is not None:
            query.append(("account", self.account))
        realm = challenge["realm"]
        if not _is_web_url(realm):
            raise self._bad_answer(realm, "no token: its realm is not an http(s) URL")
        body = await fetch_token_body(
            session,
            realm,
            query,
            self.credentials,
            registry=self.registry,
            description=self.description,
        )
        token = body.get("token") or body.get("access_token")
        if not _is_token(token):
            raise self._bad_answer(realm, "no token")
        lifetime = body.get("expires_in")
        if lifetime is None:
            lifetime = DEFAULT_TOKEN_LIFETIME
        if not _is_seconds(lifetime):
            raise self._bad_answer(realm, f"an expires_in that is not seconds: {lifetime!r:.40}")
        self.tokens.put(key, token, float(lifetime or DEFAULT_TOKEN_LIFETIME))

    def _bad_answer(self, realm: str, says: str) -> RegistryHttpError:
        return RegistryHttpError(
            Trouble.TOKEN_FAILED,
            f"{self.description}: token service {realm} sent {says}",
            status=200,
            target=realm,
        )


def _is_token(token: object) -> TypeGuard[str]:
    """A string that can go into an `Authorization` header as it is."""
    return (
        isinstance(token, str)
        and token.isascii()
        and token.isprintable()
        and not any(char.isspace() for char in token)
        and token != ""
    )


def _is_web_url(text: str) -> bool:
    try:
        url = URL(text)
        return url.scheme in ("http", "https") and bool(url.host) and url.port is not None
    except ValueError:
        return False


def _is_seconds(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


async def fetch_token_body(
    session: aiohttp.ClientSession,
    realm: str,
    query: list[tuple[str, str]],
    credentials: BasicCredentials | None,
    *,
    registry: str,
    description: str,
) -> dict[str, Any]:
    """The token service's JSON answer.

    The credentials go to the realm although it may be another origin: the registry named it.
    They never go from an HTTPS registry to a plain-HTTP realm.
    """
    if URL(registry).scheme == "https" and URL(realm).scheme != "https":
        credentials = None
    try:
        headers = {"Authorization": credentials.header()} if credentials else None
        # aiohttp drops the Authorization if the realm redirects to another origin.
        async with session.get(realm, params=query, headers=headers) as response:
            if response.status != 200:
                raise await _token_not_given(
                    response, realm, description, anonymous=credentials is None
                )
            try:
                data = await read_limited(response, TOKEN_BODY_LIMIT, description)
            except RegistryHttpError as exc:
                raise RegistryHttpError(
                    Trouble.TOKEN_FAILED,
                    f"{description}: token service {realm} failed: {exc.message}",
                    # Too much is a bad answer; a broken one, like no answer, is unavailability.
                    status=200 if exc.trouble is Trouble.TOO_LARGE else None,
                    target=realm,
                    detail=exc.detail,
                ) from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise RegistryHttpError(
            Trouble.TOKEN_FAILED,
            f"{description}: token service {realm} failed: {exc}",
            target=realm,
            detail=str(exc),
        ) from exc
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise RegistryHttpError(
            Trouble.TOKEN_FAILED,
            f"{description}: token service {realm} sent no token",
            status=200,
            target=realm,
        )
    return body


async def _token_not_given(
    response: aiohttp.ClientResponse, realm: str, description: str, *, anonymous: bool
) -> RegistryHttpError:
    """A token service's answer other than 200: the login refused (401, 403), or a failure."""
    if response.status in (401, 403):
        who = "an anonymous login" if anonymous else "the credentials"
        trouble = Trouble.TOKEN_REFUSED
        message = f"{description}: its token service {realm} refused {who} ({response.status})"
    else:
        trouble = Trouble.TOKEN_FAILED
        message = f"{description}: token service {realm} answered {response.status}"
    return RegistryHttpError(
        trouble,
        message,
        status=response.status,
        target=realm,
        retry_after=response.headers.get("Retry-After"),
        body=await read_prefix(response),
    )

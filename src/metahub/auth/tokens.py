"""Bearer tokens for the Docker token flow: signed JWTs verified without any lookup.

Claims follow distribution's token spec (iss, sub, aud, exp, nbf, iat, jti and `access`), plus
`mt`, the machine type the token speaks for (null: an anonymous unfiltered pull), `cid`, the
credential checked on every use (null: anonymous or a profile login) and `cv`, its secret's tag.
`issue` writes every one of them for every principal, so a token without one is not ours.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt

from metahub import errors

ISSUER = "metahub"
SERVICE = "metahub"
_ALGORITHM = "HS256"
# Far above any token MetaHub issues for a pull: a longer one is refused unread, not decoded.
MAX_TOKEN_LENGTH = 8 * 1024
_REQUIRED_CLAIMS = ["iss", "sub", "aud", "iat", "nbf", "exp", "jti", "access"]
_NULLABLE_CLAIMS = ("mt", "cid", "cv")  # present always, a string or null


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request speaks for: a machine type, or an anonymous unfiltered client."""

    subject: str
    machine_type: str | None
    repositories: frozenset[str] | None = None  # None: any (a Basic-authenticated request)
    credential_id: str | None = None  # checked on every use, so revocation reaches tokens
    credential_tag: str | None = None  # the secret it was issued for: rotation reaches tokens

    @property
    def unfiltered(self) -> bool:
        return self.machine_type is None

    def may_pull(self, name: str) -> bool:
        return self.repositories is None or name in self.repositories


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: str


class TokenService:
    def __init__(
        self, key: bytes, *, ttl: int = 300, cache_size: int = 8192, cache_bytes: int = 8 << 20
    ) -> None:
        self._key = key
        self.ttl = ttl
        # Verified tokens, so the hot path pays the HMAC and JSON decoding once per token;
        # bounded in count and in bytes, whatever size of tokens clients send.
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._cache_size = cache_size
        self._cache_bytes = cache_bytes
        self.cached_bytes = 0

    def issue(self, principal: Principal, repositories: list[str]) -> IssuedToken:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": principal.subject,
            "aud": SERVICE,
            "iat": now,
            "nbf": now - 5,
            "exp": now + self.ttl,
            "jti": secrets.token_hex(12),
            "access": [
                {"type": "repository", "name": name, "actions": ["pull"]} for name in repositories
            ],
            "mt": principal.machine_type,
            "cid": principal.credential_id,
            "cv": principal.credential_tag,
        }
        token = jwt.encode(claims, self._key, algorithm=_ALGORITHM)
        if len(token) > MAX_TOKEN_LENGTH:
            # verify() would refuse it: say so now, not at the client's first pull.
            raise errors.TooLarge(
                f"a token for {len(repositories)} repositories is too long; ask for fewer at once"
            )
        issued_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        return IssuedToken(token, self.ttl, issued_at)

    def verify(self, token: str) -> Principal | None:
        if len(token) > MAX_TOKEN_LENGTH:
            return None
        cached = self._verified.get(token)
        if cached is not None:
            if cached[1] > time.time():
                return cached[0]
            self._forget(token)
        principal, expires = self._decode(token)
        if principal is not None:
            self._verified[token] = (principal, expires)
            self.cached_bytes += len(token)
            while self._verified and (
                len(self._verified) > self._cache_size or self.cached_bytes > self._cache_bytes
            ):
                self._forget(next(iter(self._verified)))
        return principal

    def _forget(self, token: str) -> None:
        del self._verified[token]
        self.cached_bytes -= len(token)

    def _decode(self, token: str) -> tuple[Principal | None, float]:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                audience=SERVICE,
                issuer=ISSUER,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError:
            return None, 0.0
        if not isinstance(claims["sub"], str) or not isinstance(claims["access"], list):
            return None, 0.0
        if not all(name in claims and _string_or_null(claims[name]) for name in _NULLABLE_CLAIMS):
            return None, 0.0
        repositories = frozenset(
            str(grant.get("name"))
            for grant in claims["access"]
            if isinstance(grant, dict)
            and grant.get("type") == "repository"
            and "pull" in (grant.get("actions") or [])
        )
        principal = Principal(
            claims["sub"], claims["mt"], repositories, claims["cid"], claims["cv"]
        )
        return principal, float(claims["exp"])


def _string_or_null(value: object) -> bool:
    return value is None or isinstance(value, str)

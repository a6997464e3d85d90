"""Bearer tokens for the Docker token flow: signed JWTs verified without any lookup.

Claims follow distribution's token spec (iss, sub, aud, exp, nbf, iat, jti and `access`), plus
`mt`, the machine type the token speaks for, or `unfiltered` for an anonymous unfiltered pull.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt

ISSUER = "metahub"
SERVICE = "metahub"
_ALGORITHM = "HS256"


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
    def __init__(self, key: bytes, *, ttl: int = 300, cache_size: int = 8192) -> None:
        self._key = key
        self.ttl = ttl
        # Verified tokens, so the hot path pays the HMAC and JSON decoding once per token.
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._cache_size = cache_size

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
        issued_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        return IssuedToken(token, self.ttl, issued_at)

    def verify(self, token: str) -> Principal | None:
        cached = self._verified.get(token)
        if cached is not None:
            if cached[1] > time.time():
                return cached[0]
            del self._verified[token]
        principal, expires = self._decode(token)
        if principal is not None:
            self._verified[token] = (principal, expires)
            if len(self._verified) > self._cache_size:
                self._verified.popitem(last=False)
        return principal

    def _decode(self, token: str) -> tuple[Principal | None, float]:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                audience=SERVICE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub"]},
            )
        except jwt.PyJWTError:
            return None, 0.0
        repositories = frozenset(
            str(grant.get("name"))
            for grant in claims.get("access") or []
            if isinstance(grant, dict)
            and grant.get("type") == "repository"
            and "pull" in (grant.get("actions") or [])
        )
        machine_type = claims.get("mt")
        credential_id = claims.get("cid")
        credential_tag = claims.get("cv")
        principal = Principal(
            str(claims["sub"]),
            machine_type if isinstance(machine_type, str) else None,
            repositories,
            credential_id if isinstance(credential_id, str) else None,
            credential_tag if isinstance(credential_tag, str) else None,
        )
        return principal, float(claims["exp"])

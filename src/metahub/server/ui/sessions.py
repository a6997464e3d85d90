"""Sign-in sessions for the web UI: a signed cookie, no server-side state.

The cookie holds the admin's login, an expiry, a CSRF token, the id of the admin token that backs
the session (never the token itself, so a cookie is no API credential) and at most one flash
message, as JSON signed with HMAC-SHA256. The key is derived from
the token signing key, which every replica reads from the database, so a session opened on one
replica is good on all of them. Signing in issues an admin token (audited, listed with the
admin's other tokens) and signing out revokes it, so a session can be ended server-side, on every
replica, by signing out or by revoking the token. A visitor who has not signed in gets a cookie
with a CSRF token only, so the sign-in form is protected too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, replace

import orjson

COOKIE = "metahub_ui"
SESSION_TTL = 8 * 3600  # seconds a sign-in lasts
ANONYMOUS_TTL = 3600  # seconds the sign-in form's CSRF token lasts
_VERSION = "v2"
_KEY_CONTEXT = b"metahub web ui session v1"


def derive_key(signing_key: bytes) -> bytes:
    """A key for session cookies only: a cookie can never pass for a registry token."""
    return hmac.new(signing_key, _KEY_CONTEXT, hashlib.sha256).digest()


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True, slots=True)
class Session:
    csrf: str
    expires: int  # unix time
    admin: str | None = None
    token_id: str | None = None  # the id of the admin token behind a signed-in session
    flash: str | None = None

    @classmethod
    def anonymous(cls, now: float | None = None) -> Session:
        return cls(new_csrf(), int(now if now is not None else time.time()) + ANONYMOUS_TTL)

    @classmethod
    def signed_in(cls, admin: str, token_id: str, expires: int) -> Session:
        """A fresh CSRF token with every sign-in: nothing from before it stays valid."""
        return cls(new_csrf(), expires, admin, token_id)

    def with_flash(self, message: str | None) -> Session:
        return replace(self, flash=message)

    def csrf_ok(self, offered: str) -> bool:
        return bool(offered) and hmac.compare_digest(self.csrf.encode(), offered.encode())


class SessionCodec:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def dumps(self, session: Session) -> str:
        payload: dict[str, str | int | None] = {
            "c": session.csrf,
            "e": session.expires,
            "a": session.admin,
            "i": session.token_id,
        }
        if session.flash:
            payload["f"] = session.flash
        body = _b64(orjson.dumps(payload))
        return f"{_VERSION}.{body}.{self._sign(body)}"

    def loads(self, value: str, now: float | None = None) -> Session | None:
        """The session in a cookie, or None when it is forged, damaged or expired."""
        version, _, rest = value.partition(".")
        body, _, signature = rest.partition(".")
        if version != _VERSION or not body or not signature:
            return None
        if not hmac.compare_digest(self._sign(body), signature):
            return None
        try:
            payload = orjson.loads(_unb64(body))
            session = Session(
                csrf=str(payload["c"]),
                expires=int(payload["e"]),
                admin=_optional(payload, "a"),
                token_id=_optional(payload, "i"),
                flash=_optional(payload, "f"),
            )
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires <= (now if now is not None else time.time()):
            return None
        return session

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())


def _optional(payload: dict[str, object], key: str) -> str | None:
    value = payload.get(key)
    return None if value is None else str(value)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

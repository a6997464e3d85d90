"""Registry errors in the distribution spec's shape: `{"errors":[{code, message, detail}]}`.

Everything a client can get wrong, and everything an upstream can do wrong, ends as one of these;
`RegistryError.rendered` is the one place their responses are made, on every server surface.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson


class Rendered(NamedTuple):
    """An error as an HTTP response: every server surface sends exactly these."""

    status: int
    headers: dict[str, str]
    body: bytes


class RegistryError(Exception):
    code = "UNKNOWN"
    status = 500

    def __init__(
        self,
        message: str,
        *,
        detail: Any = None,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.headers = dict(headers or {})
        if status is not None:
            self.status = status

    def body(self) -> bytes:
        return orjson.dumps(
            {"errors": [{"code": self.code, "message": self.message, "detail": self.detail}]}
        )

    def rendered(self) -> Rendered:
        return Rendered(
            self.status, {"content-type": "application/json", **self.headers}, self.body()
        )


class BlobUnknown(RegistryError):
    code = "BLOB_UNKNOWN"
    status = 404


class DigestInvalid(RegistryError):
    code = "DIGEST_INVALID"
    status = 400


class ManifestUnknown(RegistryError):
    code = "MANIFEST_UNKNOWN"
    status = 404


class NameInvalid(RegistryError):
    code = "NAME_INVALID"
    status = 400


class NameUnknown(RegistryError):
    code = "NAME_UNKNOWN"
    status = 404


class TagInvalid(RegistryError):
    code = "TAG_INVALID"
    status = 400


class Unauthorized(RegistryError):
    code = "UNAUTHORIZED"
    status = 401


class Denied(RegistryError):
    """Authenticated, but this machine type may not pull that repository."""

    code = "DENIED"
    status = 403


class Unsupported(RegistryError):
    code = "UNSUPPORTED"
    status = 405


class TooManyRequests(RegistryError):
    code = "TOOMANYREQUESTS"
    status = 429


class RangeNotSatisfiable(RegistryError):
    code = "RANGE_INVALID"
    status = 416


class PaginationInvalid(RegistryError):
    code = "PAGINATION_NUMBER_INVALID"
    status = 400


class NotFound(RegistryError):
    code = "NOT_FOUND"
    status = 404


class TooLarge(RegistryError):
    code = "SIZE_INVALID"
    status = 413


class Conflict(RegistryError):
    """Already exists, or owned by the config file."""

    code = "CONFLICT"
    status = 409


class InvalidRequest(RegistryError):
    code = "INVALID_REQUEST"
    status = 422


# Upstream trouble: the message always names the upstream.
class UpstreamError(RegistryError):
    code = "UPSTREAM_ERROR"
    status = 502


class UpstreamUnavailable(RegistryError):
    code = "UPSTREAM_UNAVAILABLE"
    status = 503


class UpstreamTimeout(RegistryError):
    code = "UPSTREAM_TIMEOUT"
    status = 504


class DatabaseUnavailable(RegistryError):
    """MetaHub's own database could not be asked; the message names it (never its password)."""

    code = "UNAVAILABLE"
    status = 503


class ServerBusy(RegistryError):
    """This server holds `server.max_connections` connections already."""

    code = "UNAVAILABLE"
    status = 503

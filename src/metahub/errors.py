"""Registry errors in the distribution spec's shape: `{"errors":[{code, message, detail}]}`.

Everything a client can get wrong, and everything an upstream can do wrong, ends as one of these;
the server turns them into responses in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson


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


def _error(code: str, status: int) -> type[RegistryError]:
    return type(code.title().replace("_", ""), (RegistryError,), {"code": code, "status": status})


BlobUnknown = _error("BLOB_UNKNOWN", 404)
DigestInvalid = _error("DIGEST_INVALID", 400)
ManifestUnknown = _error("MANIFEST_UNKNOWN", 404)
ManifestInvalid = _error("MANIFEST_INVALID", 400)
NameInvalid = _error("NAME_INVALID", 400)
NameUnknown = _error("NAME_UNKNOWN", 404)
TagInvalid = _error("TAG_INVALID", 400)
Unauthorized = _error("UNAUTHORIZED", 401)
Denied = _error("DENIED", 403)
Unsupported = _error("UNSUPPORTED", 405)
TooManyRequests = _error("TOOMANYREQUESTS", 429)
RangeNotSatisfiable = _error("RANGE_INVALID", 416)
PaginationInvalid = _error("PAGINATION_NUMBER_INVALID", 400)
NotFound = _error("NOT_FOUND", 404)
# Upstream trouble: the message always names the upstream.
UpstreamError = _error("UPSTREAM_ERROR", 502)
UpstreamUnavailable = _error("UPSTREAM_UNAVAILABLE", 503)
UpstreamTimeout = _error("UPSTREAM_TIMEOUT", 504)

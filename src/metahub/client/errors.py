"""The one error the registry client raises; each caller words it in its own errors."""

from __future__ import annotations

from enum import StrEnum


class Trouble(StrEnum):
    """What went wrong, for a caller that maps kinds of trouble to kinds of error."""

    TIMEOUT = "timeout"  # the registry (or where it redirected to) did not answer in time
    UNREACHABLE = "unreachable"  # no connection, after the retries reads get
    FAILED = "failed"  # the HTTP exchange itself broke
    STATUS = "status"  # an answer with a status the caller did not expect
    UNAUTHORIZED = "unauthorized"  # a 401 the challenge could not be met for
    TOKEN_REFUSED = "token-refused"  # the token service said 401/403
    TOKEN_FAILED = "token-failed"  # the token service failed or sent no token
    TOO_LARGE = "too-large"  # a body over the caller's limit
    BROKEN = "broken"  # a body that broke off part-way
    REDIRECTS = "redirects"  # too many redirects
    REDIRECT_REFUSED = "redirect-refused"  # a redirect to a host the policy does not allow
    TOO_SLOW = "too-slow"  # a body that came in below the minimum rate
    MALFORMED = "malformed"  # JSON or a header whose shape is not what the protocol says
    PAGES = "pages"  # `Link` pagination that loops or does not end


class RegistryHttpError(Exception):
    """`str()` is a sentence naming the registry; the attributes say what for callers that map.

    `status` is the HTTP status when there was an answer, `target` the path (or URL) asked
    for, `detail` the registry's own words from an error body (or the network's, when there
    was no answer), `retry_after` its Retry-After, `body` the start of the error body.
    """

    def __init__(
        self,
        trouble: Trouble,
        message: str,
        *,
        status: int | None = None,
        method: str = "",
        target: str = "",
        detail: str = "",
        retry_after: str | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.trouble = trouble
        self.message = message
        self.status = status
        self.method = method
        self.target = target
        self.detail = detail
        self.retry_after = retry_after
        self.body = body

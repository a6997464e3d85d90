"""`Link` headers (RFC 8288): the next page of a paginated registry answer."""

from __future__ import annotations


def next_link(header: str | None) -> str | None:
    """The target of the `rel="next"` link, as written (it may be relative)."""
    if not header:
        return None
    for part in header.split(","):
        url, *params = part.split(";")
        for param in params:
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "rel" and value.strip().strip('"').lower() == "next":
                return url.strip().strip("<>")
    return None

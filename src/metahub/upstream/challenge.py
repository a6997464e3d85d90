"""Parsing `WWW-Authenticate` challenges (RFC 9110 auth-params) from upstream registries."""

from __future__ import annotations

import re

_PARAM_RE = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="x",service="y"` -> ("bearer", {"realm": "x", "service": "y"})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for match in _PARAM_RE.finditer(rest):
        key, quoted, bare = match.groups()
        params[key.lower()] = quoted.replace('\\"', '"') if quoted is not None else bare
    return scheme.lower(), params

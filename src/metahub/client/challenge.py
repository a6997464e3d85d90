"""Parsing `WWW-Authenticate` challenges (RFC 9110 auth-params) from upstream registries."""

from __future__ import annotations

import re

_QUOTED_PAIR = re.compile(r"\\(.)")
_PARAM_RE = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="x",service="y"` -> ("bearer", {"realm": "x", "service": "y"})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for match in _PARAM_RE.finditer(rest):
        key, quoted, bare = match.groups()
        # RFC 9110 quoted-pair: a backslash quotes any one character.
        params[key.lower()] = _QUOTED_PAIR.sub(r"\1", quoted) if quoted is not None else bare
    return scheme.lower(), params

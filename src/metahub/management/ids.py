"""Identifiers shared by the management service and the directory."""

from __future__ import annotations

import hashlib


def config_credential_id(login: str) -> str:
    """Stable across restarts, so tokens issued for a config login survive them."""
    return "cfg-" + hashlib.sha256(login.encode()).hexdigest()[:16]

"""A login and its password: what a registry's Basic challenge, or its token service, takes.

Kept apart from `auth` so that reading docker's logins does not load the HTTP client.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BasicCredentials:
    """A login and its password, sent as HTTP Basic (UTF-8, as docker sends them)."""

    login: str
    password: str

    def header(self) -> str:
        pair = f"{self.login}:{self.password}".encode()
        return f"Basic {base64.b64encode(pair).decode()}"

    def __repr__(self) -> str:
        return f"BasicCredentials(login={self.login!r}, password=***)"

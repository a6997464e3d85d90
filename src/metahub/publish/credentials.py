"""Registry credentials as docker keeps them: `config.json`, or a credential helper.

`$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`) maps registries to logins:
`auths[host].auth` holds base64 `user:password`; `credHelpers[host]` or `credsStore` names a
`docker-credential-<name>` program that answers `get` with `{"Username", "Secret"}`. Docker Hub
is keyed `https://index.docker.io/v1/`; other keys may be written with a scheme or a path, which
are ignored when matching.
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from metahub.client.credentials import BasicCredentials
from metahub.images.errors import ImageError

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


class CredentialsError(ImageError, ValueError):
    """Credentials that are there but unusable; the message says where they came from."""


# Docker's logins are sent as HTTP Basic, so they are the client's Basic credentials.
Credentials = BasicCredentials


def parse_credentials(text: str) -> Credentials:
    """`USER:PASSWORD`, as `--creds` takes it (the password may hold colons)."""
    login, sep, password = text.partition(":")
    if not sep or not login:
        raise CredentialsError("credentials must be USER:PASSWORD")
    return Credentials(login, password)


def docker_config_dir() -> Path:
    configured = os.environ.get("DOCKER_CONFIG")
    return Path(configured) if configured else Path.home() / ".docker"


def _host_of(key: str) -> str:
    if "://" in key:
        return urlsplit(key).netloc.lower()
    return key.split("/", 1)[0].lower()


def _canonical(host: str) -> str:
    host = host.lower()
    return "docker.io" if host in _DOCKER_HUB_HOSTS else host


def docker_credentials(host: str, config_dir: Path | None = None) -> Credentials | None:
    """The login docker would use for `host` (`127.0.0.1:5000`, `docker.io`), if any."""
    path = (config_dir or docker_config_dir()) / "config.json"
    try:
        config = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise CredentialsError(f"cannot read {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise CredentialsError(f"{path} is not a JSON object")
    wanted = _canonical(host)
    helpers = config.get("credHelpers")
    if isinstance(helpers, dict):
        for key, helper in helpers.items():
            if _canonical(_host_of(key)) == wanted and isinstance(helper, str):
                return _from_helper(helper, wanted)
    auths = config.get("auths")
    if isinstance(auths, dict):
        for key, entry in auths.items():
            if _canonical(_host_of(key)) == wanted and isinstance(entry, dict):
                found = _from_entry(entry, f"{path}: auths[{key!r}]")
                if found is not None:
                    return found
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        return _from_helper(store, wanted)
    return None


def _from_entry(entry: dict[str, Any], where: str) -> Credentials | None:
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise CredentialsError(f"{where}.auth is not base64 of USER:PASSWORD") from exc
        try:
            return parse_credentials(decoded)
        except CredentialsError as exc:
            raise CredentialsError(f"{where}.auth is not base64 of USER:PASSWORD") from exc
    username, password = entry.get("username"), entry.get("password")
    if isinstance(username, str) and username and isinstance(password, str):
        return Credentials(username, password)
    return None


def _from_helper(helper: str, host: str) -> Credentials | None:
    program = shutil.which(f"docker-credential-{helper}")
    if program is None:
        raise CredentialsError(
            f"docker's config names credential helper {helper!r}, "
            f"but docker-credential-{helper} is not on PATH"
        )
    server = DOCKER_HUB_KEY if host == "docker.io" else host
    result = subprocess.run(
        [program, "get"], input=server, capture_output=True, text=True, timeout=30, check=False
    )
    if result.returncode != 0:
        if "credentials not found" in (result.stdout + result.stderr).lower():
            return None
        raise CredentialsError(
            f"docker-credential-{helper} get failed for {server}: "
            f"{(result.stderr or result.stdout).strip()}"
        )
    try:
        answer = orjson.loads(result.stdout)
        username, secret = answer["Username"], answer["Secret"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise CredentialsError(f"docker-credential-{helper} sent no Username/Secret") from exc
    if not isinstance(username, str) or not isinstance(secret, str):
        raise CredentialsError(f"docker-credential-{helper} sent no Username/Secret")
    return Credentials(username, secret)

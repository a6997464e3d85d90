"""Where container runtimes read registry logins from, and writing one login into them.

docker reads `config.json` in `$DOCKER_CONFIG` (default `~/.docker`); Podman, Buildah, Skopeo
and CRI-O (containers/image) read `auth.json` at `$REGISTRY_AUTH_FILE`, else
`$XDG_RUNTIME_DIR/containers/auth.json`, else `/run/containers/<uid>/auth.json`. Both hold
`{"auths": {"<host[:port]>": {"auth": base64("<login>:<password>")}}}`.

A login is merged in: every other key and entry of the file stays as it was. The file is
replaced atomically (a temp file in the same directory, then rename) with mode 0600, since it
holds a password; a symlinked file is written where the link points.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metahub.host.errors import HostError

# Keys of an auths entry that a new password makes stale.
_CREDENTIAL_KEYS = ("auth", "username", "password", "identitytoken", "registrytoken")


class AuthFileError(HostError):
    """An auth file that cannot be read or written; the message names it."""


def docker_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    directory = env.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    return Path(directory) / "config.json"


def containers_auth_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("REGISTRY_AUTH_FILE"):
        return Path(env["REGISTRY_AUTH_FILE"])
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json"
    return Path(f"/run/containers/{os.getuid()}/auth.json")


def encode_auth(login: str, password: str) -> str:
    return base64.b64encode(f"{login}:{password}".encode()).decode("ascii")


def read_auth_file(path: Path) -> dict[str, Any]:
    """The file's JSON object; an empty one when the file does not exist or is empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise AuthFileError(f"cannot read {path}: {exc.strerror}") from exc
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AuthFileError(f"{path} is not valid JSON ({exc}); not touching it") from exc
    if not isinstance(data, dict):
        raise AuthFileError(f"{path} does not hold a JSON object; not touching it")
    return data


def _auths(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    auths = data.setdefault("auths", {})
    if not isinstance(auths, dict):
        raise AuthFileError(f"{path}: 'auths' is not a JSON object; not touching it")
    return auths


def check_auth_file(path: Path) -> None:
    """Raise AuthFileError now if the file could not take a login, before anything is written."""
    _auths(path, read_auth_file(path))


def store_login(path: Path, server: str, login: str, password: str) -> list[str]:
    """Merge `server`'s login into the auth file at `path`; returns warnings for the user."""
    data = read_auth_file(path)
    auths = _auths(path, data)
    old = auths.get(server)
    entry = {
        k: v for k, v in (old if isinstance(old, dict) else {}).items() if k not in _CREDENTIAL_KEYS
    }
    entry["auth"] = encode_auth(login, password)
    auths[server] = entry
    _write(path, data)
    return _helper_warnings(path, data, server)


def _helper_warnings(path: Path, data: Mapping[str, Any], server: str) -> list[str]:
    helpers = data.get("credHelpers")
    if isinstance(helpers, dict) and server in helpers:
        return [
            f"{path} sends {server} to the credential helper {helpers[server]!r}, "
            "which takes precedence over the login written here"
        ]
    store = data.get("credsStore")
    if isinstance(store, str) and store:
        return [
            f"{path} names the credential store {store!r}; docker reads logins from it, "
            "not from 'auths' (remove 'credsStore' or run the printed docker login)"
        ]
    return []


def _write(path: Path, data: Mapping[str, Any]) -> None:
    write_private(path, json.dumps(data, indent="\t") + "\n")


def write_private(path: Path, text: str) -> bool:
    """Replace the file at `path` with `text`, mode 0600, atomically; False if it already held
    exactly that (then it is not touched: running a login twice changes nothing)."""
    target = path.resolve() if path.is_symlink() else path
    data = text.encode("utf-8")
    try:
        if target.read_bytes() == data and stat.S_IMODE(target.stat().st_mode) == 0o600:
            return False
    except OSError:
        pass  # no file yet, or an unreadable one: write it
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        raise AuthFileError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            with contextlib.suppress(OSError):  # keep the owner (root writing a user's file)
                owner = target.stat()
                os.fchown(handle.fileno(), owner.st_uid, owner.st_gid)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise AuthFileError(f"cannot write {path}: {exc.strerror}") from exc
    return True

"""`metahub login`: log this host in to a MetaHub where its container runtimes look.

The login is either a profile login made from the detected features (`--account hpc` gives
`hpc/cpu=zen3,nvcap=8.6,...`) or a machine type's credential (`--machine-type`, `--login`).
It is checked against the server the way docker checks it (the `/v2/` challenge, a token from
the realm with Basic credentials, `/v2/` again with the token) and only then written into
docker's config.json and containers' auth.json.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from metahub.client.auth import fetch_token_body
from metahub.client.bodies import read_prefix
from metahub.client.challenge import parse_challenge
from metahub.client.credentials import BasicCredentials
from metahub.client.errors import RegistryHttpError, Trouble
from metahub.client.http import RegistryConnection
from metahub.client.retry import RetryPolicy
from metahub.client.urls import host_of, is_loopback
from metahub.host.profile_names import LoginError, without_keys

DEFAULT_TIMEOUT = 10.0
USER_AGENT = "metahub-login"
MAX_BODY = 1 << 20


class LoginRefused(LoginError):
    """The server answered and said no."""

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.detail = detail

    @property
    def unknown_keys(self) -> list[str]:
        keys = self.detail.get("unknown_keys") if isinstance(self.detail, dict) else None
        return [str(k) for k in keys] if isinstance(keys, list) else []


class _Unreachable(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Server:
    key: str  # host[:port]: what runtimes key their logins by
    urls: tuple[str, ...]  # base URLs to try, in order


def parse_server(text: str, *, insecure: bool = False) -> Server:
    """`127.0.0.1:5000`, `https://hub.example.org`, ... -> the auth-file key and URLs to try.

    Without a scheme HTTPS is tried first and plain HTTP after it only for a loopback host or
    with `insecure`, as docker does for its insecure registries.
    """
    raw = text.strip().rstrip("/")
    scheme, sep, rest = raw.partition("://")
    if not sep:
        scheme, rest = "", raw
    elif scheme not in ("http", "https"):
        raise LoginError(f"server {text!r}: use host[:port], or an http:// or https:// URL")
    if not rest or "/" in rest or any(c.isspace() for c in rest):
        raise LoginError(f"server {text!r}: expected host[:port], e.g. metahub.example.org:5000")
    if scheme:
        return Server(rest, (f"{scheme}://{rest}",))
    urls = [f"https://{rest}"]
    if insecure or is_loopback(host_of(rest)):
        urls.append(f"http://{rest}")
    return Server(rest, tuple(urls))


def docker_login_line(server: Server, login: str) -> str:
    return f"docker login -u {shlex.quote(login)} --password-stdin {shlex.quote(server.key)}"


@dataclass(slots=True)
class Verified:
    url: str
    login: str
    machine_type: str | None  # from the token's `mt` claim, when the server is a MetaHub
    notes: list[str] = field(default_factory=list)


def verify(server: Server, login: str, password: str, timeout: float = DEFAULT_TIMEOUT) -> Verified:
    """Log in as docker would; raise LoginRefused or LoginError with the reason."""
    return asyncio.run(_verify(server, login, password, timeout))


async def _verify(server: Server, login: str, password: str, timeout: float) -> Verified:
    problems = []
    for url in server.urls:
        try:
            return await _verify_at(url, login, password, timeout)
        except _Unreachable as exc:
            problems.append(f"{url}: {exc}")
    raise LoginError(f"cannot reach {server.key} ({'; '.join(problems)})")


async def _verify_at(base: str, login: str, password: str, timeout: float) -> Verified:
    async with RegistryConnection(
        base,
        description=base,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout),
        retry=RetryPolicy(retries=0),  # the person at the terminal decides whether to try again
        trust_env=True,  # a proxy in the environment is used, as by docker
        headers={"User-Agent": USER_AGENT},
    ) as connection:
        status, headers, _ = await _get(connection, f"{base}/v2/", None)
        scheme, params = parse_challenge(headers.get("WWW-Authenticate", ""))
        credentials = BasicCredentials(login, password)
        if status == 401 and scheme == "basic":
            status, _, body = await _get(connection, f"{base}/v2/", credentials.header())
            _refused_unless_ok(status, body, base)
            return Verified(base, login, None)
        if status not in (200, 401):
            raise LoginError(f"{base}/v2/ answered {status}: is this a registry?")
        realm = (params.get("realm") if scheme == "bearer" else None) or f"{base}/token"
        query = [("service", params.get("service", "metahub")), ("account", login)]
        token = await _token(connection, realm, query, credentials)
        status, _, body = await _get(connection, f"{base}/v2/", f"Bearer {token}")
        _refused_unless_ok(status, body, base)
        return Verified(base, login, _machine_type(token))


async def _get(
    connection: RegistryConnection, url: str, authorization: str | None
) -> tuple[int, Mapping[str, str], bytes]:
    """One GET; credentials are dropped on a redirect away from the server's origin."""
    headers = {"Authorization": authorization} if authorization else {}
    try:
        async with await connection.send("GET", url, headers=headers) as response:
            return response.status, response.headers, await read_prefix(response, MAX_BODY)
    except RegistryHttpError as exc:
        if exc.trouble in (Trouble.TIMEOUT, Trouble.UNREACHABLE, Trouble.FAILED):
            raise _Unreachable(exc.detail) from exc
        raise LoginError(str(exc)) from exc


async def _token(
    connection: RegistryConnection,
    realm: str,
    query: list[tuple[str, str]],
    credentials: BasicCredentials,
) -> str:
    try:
        answer = await fetch_token_body(
            connection.session(),
            realm,
            query,
            credentials,
            registry=connection.url,
            description=connection.url,
        )
    except RegistryHttpError as exc:
        if exc.status is None:
            raise _Unreachable(exc.detail) from exc
        _refused_unless_ok(exc.status, exc.body, connection.url)
        raise LoginError(f"{realm} did not answer with a token") from exc
    token = answer.get("token") or answer.get("access_token")
    if not isinstance(token, str) or not token:
        raise LoginError(f"{realm} did not answer with a token")
    return token


def _refused_unless_ok(status: int, body: bytes, base: str) -> None:
    if status == 200:
        return
    message, detail = _registry_error(body)
    if status in (401, 403):
        raise LoginRefused(message or "invalid username or password", detail)
    raise LoginError(f"{base} answered {status}" + (f": {message}" if message else ""))


def _registry_error(body: bytes) -> tuple[str, Any]:
    try:
        errors = json.loads(body)["errors"]
        first = errors[0]
        return str(first.get("message") or ""), first.get("detail")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return "", None


def _machine_type(token: str) -> str | None:
    """The `mt` claim of a MetaHub token (read, not verified: the server just issued it)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    mt = claims.get("mt") if isinstance(claims, dict) else None
    return mt if isinstance(mt, str) else None


def log_in(
    server: Server, login: str, password: str, *, timeout: float = DEFAULT_TIMEOUT
) -> Verified:
    """Verify a login; a profile login the server refuses keys of is retried without them."""
    try:
        return verify(server, login, password, timeout)
    except LoginRefused as refused:
        unknown = refused.unknown_keys
        if "/" not in login or not unknown:
            raise
        fewer = without_keys(login, unknown)
        verified = verify(server, fewer, password, timeout)
        verified.notes.append(
            f"{server.key} does not use {', '.join(unknown)}: logged in without "
            f"{'it' if len(unknown) == 1 else 'them'}"
        )
        return verified


def write_login(
    server: Server, login: str, password: str, paths: Iterable[Path]
) -> tuple[list[Path], list[str]]:
    from metahub.host.authfiles import store_login

    written: list[Path] = []
    warnings: list[str] = []
    for path in paths:
        warnings += store_login(path, server.key, login, password)
        written.append(path)
    return written, warnings

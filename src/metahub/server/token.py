"""`/token`: the Docker token service (GET with Basic auth) and its OAuth2 form (POST)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import orjson

from metahub import errors
from metahub.auth.access import may_pull
from metahub.auth.tokens import Principal
from metahub.hub import Hub
from metahub.oci.reference import NAME_RE
from metahub.server.authn import anonymous, checked_basic, principal_from_password
from metahub.server.http import Request, Response

MAX_FORM_BYTES = 64 * 1024


def pull_repositories(scopes: list[str]) -> list[str]:
    """Repositories to grant pull on; anything else asked (push, catalog) is not granted."""
    granted: list[str] = []
    for scope_list in scopes:
        for scope in scope_list.split(" "):
            parts = scope.split(":")
            if len(parts) < 3 or parts[0] != "repository":
                continue
            name, actions = ":".join(parts[1:-1]), parts[-1].split(",")
            wants_pull = "pull" in actions or "*" in actions
            if wants_pull and NAME_RE.match(name) and name not in granted:
                granted.append(name)
    return granted


def granted_repositories(
    hub: Hub, principal: Principal, asked: list[str], ns: str | None
) -> list[str]:
    """Those of the repositories asked for that the principal's machine type may pull.

    A scope names the path as the client sent it (`ghcr.io/acme/app` through a prefix,
    `acme/app` with the `ns` that MetaHub's challenge put in the realm), so it is routed as a
    `/v2/` request would be. One left out (patterns, or a registry not mirrored) is simply not
    granted, as distribution does: the client learns why when it asks `/v2/` for it, which
    answers `403 DENIED` naming the repository and the machine type, or `404 NAME_UNKNOWN`.
    `/v2/` checks the patterns again on every request, so a grant never widens access.
    """
    profile = hub.profiles.for_principal(principal)
    granted = []
    for name in asked:
        try:
            route = hub.router.route(name, ns)
        except errors.NameUnknown:
            continue
        if may_pull(profile, route.registry, route.repository):
            granted.append(name)
    return granted


async def token_endpoint(request: Request, hub: Hub, receive: Any) -> Response:
    if request.method == "GET":
        principal = await _principal_for_get(request, hub)
        scopes = request.query.get("scope", [])
        oauth = False
    elif request.method == "POST":
        form = await _read_form(receive)
        hub.login_failures.check(request.client_address)
        principal = await _principal_for_post(hub, form, request.client_address)
        scopes = form.get("scope", [])
        oauth = True
    else:
        raise errors.Unsupported(f"{request.method} is not supported on /token")
    repositories = granted_repositories(
        hub, principal, pull_repositories(scopes), request.param("ns")
    )
    issued = hub.tokens.issue(principal, repositories)
    body: dict[str, Any] = {
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": issued.issued_at,
    }
    if not oauth:
        body["token"] = issued.token
    else:
        body["scope"] = " ".join(f"repository:{name}:pull" for name in repositories)
    return Response(200, {"content-type": "application/json"}, orjson.dumps(body))


def _refused(message: str) -> errors.RegistryError:
    return errors.Unauthorized(message, headers={"WWW-Authenticate": 'Basic realm="metahub"'})


async def _principal_for_get(request: Request, hub: Hub) -> Principal:
    header = request.headers.get("authorization")
    if header:
        principal = await checked_basic(request, hub, header)
        if principal is None:
            raise _refused("invalid username or password")
        return principal
    principal = anonymous(hub)
    if principal is None:
        raise _refused("authentication required")
    return principal


async def _principal_for_post(hub: Hub, form: dict[str, list[str]], address: str) -> Principal:
    grant = (form.get("grant_type") or [""])[0]
    if grant != "password":
        # Refresh tokens are not issued, so the only grant a client can use is "password".
        raise errors.Unsupported(f"grant_type {grant!r} is not supported; use 'password'")
    login = (form.get("username") or [""])[0]
    password = (form.get("password") or [""])[0]
    principal = await principal_from_password(hub, login, password)
    if principal is None:
        hub.login_failures.failed(address)
        raise _refused("invalid username or password")
    return principal


async def _read_form(receive: Any) -> dict[str, list[str]]:
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > MAX_FORM_BYTES:
            raise errors.TooLarge("token request body is too large")
        if not message.get("more_body"):
            break
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)

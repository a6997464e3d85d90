"""Turning a request's Authorization header into a Principal, or a 401 challenge."""

from __future__ import annotations

import base64
from urllib.parse import quote

from metahub import errors
from metahub.auth.access import check_repository_access
from metahub.auth.profile_logins import ProfileLoginError, is_profile_login
from metahub.auth.tokens import SERVICE, Principal
from metahub.features.selection import MachineProfile
from metahub.hub import Hub
from metahub.server.http import Request
from metahub.server.origin import origin_of
from metahub.upstream.routing import Route


def challenge(request: Request, hub: Hub, name: str | None, error: str | None = None) -> str:
    base = origin_of(request.scope, hub.settings).url
    realm = f"{base}/token"
    ns = request.param("ns")
    if ns:
        # containerd keeps a realm's query when it asks for a token: /token then knows which
        # registry a scope's repository (named as the path names it) belongs to.
        realm += f"?ns={quote(ns, safe='')}"
    value = f'Bearer realm="{realm}",service="{SERVICE}"'
    if name is not None:
        value += f',scope="repository:{name}:pull"'
    if error is not None:
        value += f',error="{error}"'
    return value


def unauthorized(
    request: Request, hub: Hub, name: str | None, message: str, error: str | None = None
) -> errors.RegistryError:
    return errors.Unauthorized(
        message,
        headers={"WWW-Authenticate": challenge(request, hub, name, error)},
        detail=[{"Type": "repository", "Name": name, "Action": "pull"}] if name else None,
    )


def basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):  # binascii.Error; and non-ASCII text in the header
        return None
    login, sep, password = decoded.partition(":")
    return (login, password) if sep else None


async def principal_from_basic(hub: Hub, header: str) -> Principal | None:
    credentials = basic_credentials(header)
    if credentials is None:
        return None
    return await principal_from_password(hub, *credentials)


async def checked_basic(request: Request, hub: Hub, header: str) -> Principal | None:
    """Basic credentials, with failed attempts limited per source address."""
    hub.login_failures.check(request.client_address)
    principal = await principal_from_basic(hub, header)
    if principal is None:
        hub.login_failures.failed(request.client_address)
    return principal


async def principal_from_password(hub: Hub, login: str, password: str) -> Principal | None:
    account = await hub.credentials.check_account(login, password)
    if account is not None:
        return Principal(
            login,
            account.machine_type,
            credential_id=account.credential_id,
            credential_tag=account.secret_tag,
        )
    if not is_profile_login(login):
        return None
    try:
        profile = await hub.profile_logins.authenticate(login, password)
    except ProfileLoginError as exc:
        # The password was right: say what is wrong with the login itself.
        raise errors.Unauthorized(
            str(exc), detail=exc.detail, headers={"WWW-Authenticate": 'Basic realm="metahub"'}
        ) from exc
    return Principal(login, profile.name) if profile is not None else None


def authorize(
    request: Request, hub: Hub, principal: Principal, name: str, route: Route
) -> MachineProfile | None:
    """The profile `principal` is served for, once it may pull `name` (routed to `route`).

    A repository outside the machine type's patterns is `403 DENIED`, whether the credentials
    came as a token or as Basic auth: the client is told at once, and not sent for a new token
    that would not grant it either. A token issued for other repositories is `401
    insufficient_scope`, so the client asks for one that covers this repository.
    """
    profile = hub.profiles.for_principal(principal)
    check_repository_access(profile, route.registry, route.repository)
    if not principal.may_pull(name):
        raise unauthorized(
            request, hub, name, f"token does not grant pull on {name}", "insufficient_scope"
        )
    return profile


def anonymous(hub: Hub) -> Principal | None:
    config = hub.settings.anonymous
    if config is None:
        return None
    return Principal("anonymous", config.machine_type)


def is_bearer(header: str) -> bool:
    return header.partition(" ")[0].lower() == "bearer"


def bearer_principal(request: Request, hub: Hub, name: str | None, header: str) -> Principal:
    """The principal of a Bearer token that is valid now; else 401. Whether it grants pull on
    `name` is `authorize`'s question, asked after the repository patterns.

    Synchronous (the token is verified from memory), so the warm path's shortcut checks a
    token exactly as `authenticate` does, on every request: expiry, revocation; then scope
    and patterns through `authorize`.
    """
    principal = hub.tokens.verify(header[7:].strip())
    if principal is None:
        raise unauthorized(request, hub, name, "invalid or expired token", "invalid_token")
    cid = principal.credential_id
    if cid is not None and not hub.directory.credential_active(cid, principal.credential_tag):
        raise unauthorized(
            request,
            hub,
            name,
            "the credential behind this token is not active: revoked, expired, given a new "
            "password, or not known to this server yet",
            "invalid_token",
        )
    return principal


async def authenticate(request: Request, hub: Hub, name: str | None) -> Principal:
    header = request.headers.get("authorization", "")
    scheme = header.partition(" ")[0].lower()
    if scheme == "bearer":
        return bearer_principal(request, hub, name, header)
    if scheme == "basic":
        try:
            principal = await checked_basic(request, hub, header)
        except errors.Unauthorized as exc:  # a profile login refused: challenge as for any 401
            raise unauthorized(request, hub, name, exc.message) from exc
        if principal is None:
            raise unauthorized(request, hub, name, "invalid username or password")
        return principal
    principal = anonymous(hub)
    if principal is None:
        raise unauthorized(request, hub, name, "authentication required")
    return principal

"""Management API routes: machine types, credentials, admins, admin tokens and the audit log.

Every route needs an admin token (`Authorization: Bearer mha_...`, or a token from the config's
`admin.tokens`). Machine-type credentials never open these routes, and admin tokens are not
registry credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import shlex
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from metahub import errors
from metahub.hub import Hub
from metahub.management.records import IssuedSecret
from metahub.server.origin import origin_of

CONFIG_ACTOR = "config-token"
# Declares the scheme in the OpenAPI document; require_admin gives the answer itself (401 with
# the registry's error shape, and failures counted per address).
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="adminToken",
    description="An admin token (`mha_...`) or one of the config's `admin.tokens`.",
)


def current_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.get_hub()
    return hub


async def require_admin(
    request: Request,
    hub: Annotated[Hub, Depends(current_hub)],
    offered: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> str:
    """The admin a request speaks for; 401 otherwise, and 429 after too many failures."""
    address = request.client.host if request.client else "unknown"
    hub.login_failures.check(address)
    token = offered.credentials.strip() if offered is not None else ""
    actor = None
    if token:
        actor = _config_token_actor(hub, token) or await hub.management.admin_for_token(token)
    if actor is None:
        hub.login_failures.failed(address)
        raise errors.Unauthorized(
            "an admin token is required (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": 'Bearer realm="metahub-admin"'},
        )
    return actor


def _config_token_actor(hub: Hub, token: str) -> str | None:
    offered = "sha256:" + hashlib.sha256(token.encode()).hexdigest()
    for configured in hub.settings.admin.tokens:
        expected = (
            configured
            if configured.startswith("sha256:")
            else "sha256:" + hashlib.sha256(configured.encode()).hexdigest()
        )
        if hmac.compare_digest(offered, expected):
            return CONFIG_ACTOR
    return None


HubDep = Annotated[Hub, Depends(current_hub)]
Admin = Annotated[str, Depends(require_admin)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MachineTypeIn(_Body):
    name: str = Field(min_length=1, max_length=255)
    features: list[str] = []
    mode: Literal["best", "exact"] = "best"
    platforms: list[str] = []
    repositories: list[str] = Field(
        [],
        description="registry/repository patterns it may pull (`*` within a path component, "
        "`**` across components); empty: every repository.",
    )
    description: str = ""


class MachineTypeChange(_Body):
    features: list[str] | None = None
    mode: Literal["best", "exact"] | None = None
    platforms: list[str] | None = None
    repositories: list[str] | None = Field(
        None, description="Replaces the patterns; `[]` allows every repository again."
    )
    description: str | None = None


class CredentialIn(_Body):
    login: str | None = Field(None, min_length=1, max_length=255)
    expires: datetime | None = None


class ExpireIn(_Body):
    at: datetime


class AdminIn(_Body):
    login: str = Field(min_length=1, max_length=255)
    password: str = Field(min_length=12)


class TokenIn(_Body):
    name: str = Field("token", min_length=1, max_length=255)
    expires: datetime | None = None


class _Out(BaseModel):
    # Forbidding extras makes a field added to a record but not here fail loudly in tests.
    model_config = ConfigDict(extra="forbid")


Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class MachineTypeOut(_Out):
    name: str
    features: list[str]
    mode: Literal["best", "exact"]
    platforms: list[str]
    repositories: list[str] = Field(description="registry/repository patterns; empty: all.")
    description: str
    revision: int = Field(description="Bumped on every change.")
    config_managed: bool = Field(description="From the config file: read-only here.")
    credentials: int = Field(description="Credentials not revoked.")


class CredentialOut(_Out):
    id: str
    machine_type: str
    login: str
    config_managed: bool
    created: Timestamp | None
    expires: Timestamp | None
    revoked: Timestamp | None
    active: bool


class IssuedCredential(_Out):
    id: str
    login: str
    password: str = Field(description="Shown this once; only its hash is kept.")
    docker_login: str


class AdminOut(_Out):
    login: str


class AdminTokenOut(_Out):
    id: str
    admin: str
    name: str
    created: Timestamp | None
    expires: Timestamp | None
    revoked: Timestamp | None


class IssuedToken(_Out):
    id: str
    login: str
    token: str = Field(description="Shown this once; only its sha256 is kept.")


class AuditEntryOut(_Out):
    id: int
    at: Timestamp | None
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


class ErrorItem(BaseModel):
    code: str
    message: str
    detail: Any = None


class ErrorBody(BaseModel):
    """The registry's error shape, used by every error of this API."""

    errors: list[ErrorItem]


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


Responses = dict[int | str, dict[str, Any]]
UNKNOWN: Responses = {404: _error("Unknown machine type, credential, admin or token.")}
CONFLICT: Responses = {409: _error("Already exists, or managed by the config file.")}
# What any route of this API may answer.
COMMON_ERRORS: Responses = {
    401: _error("No admin token, or not a valid one."),
    422: _error("Invalid request; `detail` names each field."),
    429: _error("Too many failed logins from this address."),
}
# A change to something that must exist and that the config file may own.
CHANGE_ERRORS: Responses = {**UNKNOWN, **CONFLICT}
# The route answers 204 with an empty body (see _no_content).
NO_CONTENT: dict[str, Any] = {"status_code": 204, "response_class": Response}
router = APIRouter(prefix="/v1", dependencies=[Depends(bearer_scheme)], responses=COMMON_ERRORS)
# One router a resource, so that each route carries its resource's tag in the OpenAPI document.
machine_types = APIRouter(prefix="/machine-types", tags=["machine types"])
credentials = APIRouter(tags=["credentials"])
admins = APIRouter(tags=["admins"])
audit_log = APIRouter(tags=["audit"])


def _no_content() -> Response:
    return Response(status_code=204)


def _issued(secret: IssuedSecret, request: Request, hub: Hub, kind: str) -> dict[str, Any]:
    body: dict[str, Any] = {"id": secret.id, "login": secret.login, kind: secret.secret}
    if kind == "password":
        host = shlex.quote(origin_of(request.scope, hub.settings).host)
        login = shlex.quote(secret.login)
        body["docker_login"] = f"docker login -u {login} --password-stdin {host}"
    return body


@machine_types.get("", response_model=list[MachineTypeOut])
async def list_machine_types(hub: HubDep, _: Admin) -> list[dict[str, Any]]:
    return [m.to_json() for m in await hub.management.list_machine_types()]


@machine_types.post("", status_code=201, response_model=MachineTypeOut, responses=CONFLICT)
async def create_machine_type(body: MachineTypeIn, hub: HubDep, actor: Admin) -> dict[str, Any]:
    created = await hub.management.create_machine_type(
        actor,
        body.name,
        body.features,
        mode=body.mode,
        platforms=body.platforms,
        repositories=body.repositories,
        description=body.description,
    )
    return created.to_json()


@machine_types.get("/{name}", response_model=MachineTypeOut, responses=UNKNOWN)
async def get_machine_type(name: str, hub: HubDep, _: Admin) -> dict[str, Any]:
    return (await hub.management.get_machine_type(name)).to_json()


@machine_types.patch("/{name}", response_model=MachineTypeOut, responses=CHANGE_ERRORS)
async def update_machine_type(
    name: str, body: MachineTypeChange, hub: HubDep, actor: Admin
) -> dict[str, Any]:
    updated = await hub.management.update_machine_type(
        actor,
        name,
        features=body.features,
        mode=body.mode,
        platforms=body.platforms,
        repositories=body.repositories,
        description=body.description,
    )
    return updated.to_json()


@machine_types.delete("/{name}", **NO_CONTENT, responses=CHANGE_ERRORS)
async def delete_machine_type(name: str, hub: HubDep, actor: Admin) -> Response:
    await hub.management.delete_machine_type(actor, name)
    return _no_content()


@credentials.get(
    "/machine-types/{name}/credentials", response_model=list[CredentialOut], responses=UNKNOWN
)
async def list_type_credentials(name: str, hub: HubDep, _: Admin) -> list[dict[str, Any]]:
    return [c.to_json() for c in await hub.management.list_credentials(name)]


@credentials.post(
    "/machine-types/{name}/credentials",
    status_code=201,
    response_model=IssuedCredential,
    responses=CHANGE_ERRORS,
)
async def create_credential(
    name: str, body: CredentialIn, request: Request, hub: HubDep, actor: Admin
) -> dict[str, Any]:
    """Returns the password once; only its hash is kept."""
    issued = await hub.management.create_credential(
        actor, name, login=body.login, expires=body.expires
    )
    return _issued(issued, request, hub, "password")


@credentials.get("/credentials", response_model=list[CredentialOut], responses=UNKNOWN)
async def list_credentials(
    hub: HubDep, _: Admin, machine_type: Annotated[str | None, Query()] = None
) -> list[dict[str, Any]]:
    return [c.to_json() for c in await hub.management.list_credentials(machine_type)]


@credentials.get("/credentials/{credential_id}", response_model=CredentialOut, responses=UNKNOWN)
async def get_credential(credential_id: str, hub: HubDep, _: Admin) -> dict[str, Any]:
    return (await hub.management.get_credential(credential_id)).to_json()


@credentials.post(
    "/credentials/{credential_id}/rotate",
    response_model=IssuedCredential,
    responses=CHANGE_ERRORS,
)
async def rotate_credential(
    credential_id: str, request: Request, hub: HubDep, actor: Admin
) -> dict[str, Any]:
    issued = await hub.management.rotate_credential(actor, credential_id)
    return _issued(issued, request, hub, "password")


@credentials.post(
    "/credentials/{credential_id}/revoke", response_model=CredentialOut, responses=CHANGE_ERRORS
)
async def revoke_credential(credential_id: str, hub: HubDep, actor: Admin) -> dict[str, Any]:
    return (await hub.management.revoke_credential(actor, credential_id)).to_json()


@credentials.post(
    "/credentials/{credential_id}/expire", response_model=CredentialOut, responses=CHANGE_ERRORS
)
async def expire_credential(
    credential_id: str, body: ExpireIn, hub: HubDep, actor: Admin
) -> dict[str, Any]:
    return (await hub.management.expire_credential(actor, credential_id, body.at)).to_json()


@admins.get("/admins", response_model=list[str])
async def list_admins(hub: HubDep, _: Admin) -> list[str]:
    return await hub.management.list_admins()


@admins.post("/admins", status_code=201, response_model=AdminOut, responses=CONFLICT)
async def create_admin(body: AdminIn, hub: HubDep, actor: Admin) -> dict[str, str]:
    await hub.management.create_admin(actor, body.login, body.password)
    return {"login": body.login}


@admins.delete("/admins/{login}", **NO_CONTENT, responses=UNKNOWN)
async def delete_admin(login: str, hub: HubDep, actor: Admin) -> Response:
    await hub.management.delete_admin(actor, login)
    return _no_content()


@admins.get("/admins/{login}/tokens", response_model=list[AdminTokenOut], responses=UNKNOWN)
async def list_tokens(login: str, hub: HubDep, _: Admin) -> list[dict[str, Any]]:
    return [t.to_json() for t in await hub.management.list_admin_tokens(login)]


@admins.post(
    "/admins/{login}/tokens", status_code=201, response_model=IssuedToken, responses=UNKNOWN
)
async def create_token(
    login: str, body: TokenIn, request: Request, hub: HubDep, actor: Admin
) -> dict[str, Any]:
    """Returns the token once; only its sha256 is kept."""
    issued = await hub.management.create_admin_token(actor, login, body.name, expires=body.expires)
    return _issued(issued, request, hub, "token")


@admins.post("/tokens/{token_id}/revoke", **NO_CONTENT, responses=UNKNOWN)
async def revoke_token(token_id: str, hub: HubDep, actor: Admin) -> Response:
    await hub.management.revoke_admin_token(actor, token_id)
    return _no_content()


@audit_log.get("/audit", response_model=list[AuditEntryOut])
async def audit(
    hub: HubDep,
    _: Admin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> list[dict[str, Any]]:
    return [e.to_json() for e in await hub.management.audit(limit=limit, before=before)]


# Routes are copied when included, so this comes after all of them.
for resource in (machine_types, credentials, admins, audit_log):
    router.include_router(resource)

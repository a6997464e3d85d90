"""The management API (FastAPI, mounted at `/api`; OpenAPI at `/api/openapi.json`).

Errors use the registry's error shape, so every client of MetaHub parses one format.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from metahub import __version__, errors
from metahub.hub import Hub
from metahub.oci.reference import parse_image
from metahub.server.admin_api import COMMON_ERRORS, ErrorBody, current_hub, require_admin, router
from metahub.server.database import database_unavailable, is_unavailable
from metahub.server.fleet_api import router as fleet_router
from metahub.serving.explain import explanation_json

HubGetter = Callable[[], Hub]


class OrjsonResponse(JSONResponse):
    """JSON bodies written by orjson, as all JSON MetaHub produces (FastAPI's own ORJSONResponse
    is deprecated and warns on every answer)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


class ExplainedMachineType(BaseModel):
    name: str
    features: list[str]
    mode: str
    platforms: list[str]


class Score(BaseModel):
    satisfied: int
    distance: float


class ExplainedEntry(BaseModel):
    position: int
    digest: str
    media_type: str
    platform: str | None
    features: list[str]
    fits: bool
    score: Score
    chosen: bool
    # The platform the filtered index lists it under, when not its own (an x86-64 level).
    served_platform: str | None
    # The rules that made it fit beyond its features (an architecture variant read as a level).
    rules: list[str]
    why_not: list[str]


class UpstreamIndex(BaseModel):
    digest: str
    media_type: str


class ExplainedIndex(BaseModel):
    upstream: UpstreamIndex
    filtered: bool
    served_digest: str | None
    error: str | None
    entries: list[ExplainedEntry]
    nested: dict[str, ExplainedIndex]


class ExplainedSubject(BaseModel):
    image: str
    registry: str  # the upstream registry the image was routed to
    repository: str  # the repository within that registry
    machine_type: ExplainedMachineType


# The top-level index judged like a nested one, under what was asked. The subject is the
# second base so that its fields come first in the body and the schema.
class Explanation(ExplainedIndex, ExplainedSubject):
    pass


def create_api(get_hub: HubGetter) -> FastAPI:
    api = FastAPI(
        title="MetaHub management API",
        version=__version__,
        default_response_class=OrjsonResponse,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    api.state.get_hub = get_hub

    @api.exception_handler(errors.RegistryError)
    async def registry_error(request: Request, exc: errors.RegistryError) -> Response:
        return web_error_response(exc)

    @api.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        fields = [{"field": _field(e["loc"]), "message": e["msg"]} for e in exc.errors()]
        message = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        return web_error_response(errors.InvalidRequest(message, detail=fields))

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        error: errors.RegistryError
        if exc.status_code == 404:
            error = errors.NotFound(f"nothing at {request.url.path}")
        elif exc.status_code == 400:
            # A body that is not JSON at all (undecodable bytes): as invalid as a wrong field.
            message = f"body: {exc.detail}"
            error = errors.InvalidRequest(
                message, detail=[{"field": "body", "message": str(exc.detail)}]
            )
        elif exc.status_code == 405:
            error = errors.Unsupported(str(exc.detail))
        else:
            error = errors.RegistryError(str(exc.detail), status=exc.status_code)
        return web_error_response(error)

    @api.exception_handler(DBAPIError)
    @api.exception_handler(PoolTimeout)
    async def database_error(request: Request, exc: Exception) -> Response:
        if not is_unavailable(exc):
            raise exc  # a conflict the service did not expect: a bug, answered 500
        hub: Hub = request.app.state.get_hub()
        return web_error_response(database_unavailable(exc, hub, request.method, request.url.path))

    api.include_router(router)
    api.include_router(fleet_router)

    @api.get(
        "/v1/explain",
        dependencies=[Depends(require_admin)],
        tags=["selection"],
        response_model=Explanation,
        responses={
            **COMMON_ERRORS,
            400: {"model": ErrorBody, "description": "Not a valid image reference."},
            404: {"model": ErrorBody, "description": "Unknown machine type or image."},
        },
    )
    async def explain(
        hub: Annotated[Hub, Depends(current_hub)],
        image: Annotated[str, Query(description="name:tag or name@digest", min_length=1)],
        machine_type: Annotated[str, Query(min_length=1)],
        registry: Annotated[
            str | None,
            Query(
                description="The registry, as containerd's `ns` names it; default: the image's "
                "path prefix, else the default upstream"
            ),
        ] = None,
    ) -> dict[str, Any]:
        """Every entry of the image's index judged for the machine type, and which was chosen."""
        name, reference = parse_image(image)
        route = hub.router.route(name, registry)
        profile = hub.profiles.named(machine_type)
        filtering = await hub.manifests.explain(route.key, reference, profile)
        return explanation_json(image, route, profile, filtering)

    return api


def _field(location: Sequence[Any]) -> str:
    """`features.0`, not `body.features.0`: named as the service's own checks name fields."""
    parts = list(location)
    if len(parts) > 1 and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(str(part) for part in parts)


def web_error_response(error: errors.RegistryError) -> Response:
    """An error for the Starlette side (API, `/`): the same status, headers and body as
    `http.error_response` gives the registry's."""
    status, headers, body = error.rendered()
    return Response(body, status_code=status, headers=headers)

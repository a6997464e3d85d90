"""Fleet operations in the management API: coverage (`GET /v1/coverage`) and warming
(`POST /v1/warm`, progress streamed as NDJSON). Both need an admin token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import StreamingResponse

from metahub.server.admin_api import COMMON_ERRORS, ErrorBody, HubDep, require_admin
from metahub.serving.coverage import coverage_of, profiles_named, routed_image
from metahub.serving.outcomes import Outcome
from metahub.serving.warm import Warmer, WarmImage

NDJSON = "application/x-ndjson"
MAX_IMAGES = 100

router = APIRouter(dependencies=[Depends(require_admin)])


class CoverageEntry(BaseModel):
    platform: str | None
    features: list[str]
    digest: str


class CoverageCell(BaseModel):
    machine_type: str
    outcome: Outcome
    served_digest: str | None
    entries: list[CoverageEntry]


class SuggestedBuild(BaseModel):
    target: str = Field(description="An archspec microarchitecture name.")
    feature: str
    machine_types: list[str] = Field(description="The generic types such a build would match.")


class SuggestedBuilds(BaseModel):
    targets: list[SuggestedBuild]
    unreachable: list[str] = Field(
        description="Generic types no cpu build can reach: they declare no cpu feature, "
        "or one archspec does not know."
    )


class ImageCoverage(BaseModel):
    image: str
    digest: str
    machine_types: list[CoverageCell]
    suggested_builds: SuggestedBuilds


class Coverage(BaseModel):
    images: list[ImageCoverage]


class WarmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    images: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1, max_length=MAX_IMAGES)
    machine_types: list[Annotated[str, Field(min_length=1)]] = Field(
        default=[], description="The machine types to warm for; all when empty."
    )


@router.get(
    "/v1/coverage",
    tags=["selection"],
    response_model=Coverage,
    responses={
        **COMMON_ERRORS,
        400: {"model": ErrorBody, "description": "Not a valid image reference."},
        404: {"model": ErrorBody, "description": "Unknown machine type or image."},
    },
)
async def coverage(
    hub: HubDep,
    image: Annotated[
        list[str],
        Query(description="name:tag or name@digest; repeat for more", min_length=1),
    ],
    machine_type: Annotated[
        list[str], Query(description="Machine types to ask for (default: all); repeatable")
    ] = [],  # noqa: B006 -- FastAPI copies query defaults
) -> dict[str, Any]:
    """For every machine type and image: `matched`, `generic` or `none`, the entries a pull
    gets, and which cpu builds would give the generic types a matched one."""
    return await coverage_of(hub.manifests, hub.profiles, image, machine_type, hub.router)


@router.post(
    "/v1/warm",
    tags=["selection"],
    response_class=StreamingResponse,
    responses={
        **COMMON_ERRORS,
        200: {
            "description": "Progress as NDJSON: one event object per line, `summary` last.",
            "content": {NDJSON: {"schema": {"type": "string"}}},
        },
        400: {"model": ErrorBody, "description": "Not a valid image reference."},
        404: {"model": ErrorBody, "description": "Unknown machine type."},
        409: {"model": ErrorBody, "description": "No blob cache (`cache.blobs`) configured."},
    },
)
async def warm(hub: HubDep, body: WarmIn) -> StreamingResponse:
    """Fetch the manifests and blobs each machine type's pull of each image would get into the
    caches. The answer streams events as the work goes; closing it stops the work."""
    warmer = Warmer(hub.manifests, hub.blobs)
    images = [WarmImage(image, *routed_image(image, hub.router)) for image in body.images]
    profiles = profiles_named(hub.profiles, body.machine_types)

    async def lines() -> AsyncIterator[bytes]:
        async for event in warmer.warm(images, profiles):
            yield orjson.dumps(event) + b"\n"

    return StreamingResponse(lines(), media_type=NDJSON)

"""The Coverage page: a matrix of machine types by images, each cell the outcome of a pull
(matched, generic, none) linking to its explanation on the "try an image" page, and under it
the cpu builds that would give the generic types a matched one."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from metahub import errors
from metahub.oci.reference import parse_image
from metahub.server.ui.pages import Page, Pages
from metahub.serving.coverage import coverage_of, suggestion_text

MAX_IMAGES = 20  # a matrix wider than this is unreadable on a page; the API takes more


def coverage_page(pages: Pages) -> Any:
    async def handle(page: Page) -> Response:
        query = page.request.query_params
        text = query.get("images", "")
        images = [line.strip() for line in text.splitlines() if line.strip()]
        chosen = [name for name in query.getlist("machine_type") if name]
        profiles = page.hub.profiles
        context: dict[str, Any] = {
            "images_text": text,
            "chosen": chosen,
            "names": profiles.names(),
            "errors": {},
            "problem": None,
            "report": None,
            "suggestion_text": suggestion_text,
        }
        if "images" not in query:
            return pages.render(page, "coverage.html", context)
        status = 200
        unknown = [name for name in chosen if name not in context["names"]]
        if unknown:
            context["errors"]["machine_type"] = f"no such machine type: {', '.join(unknown)}"
            status = 404
        if not images:
            context["errors"]["images"] = "enter one image a line, e.g. qnib/bench:latest"
            status = 400
        elif len(images) > MAX_IMAGES:
            context["errors"]["images"] = f"at most {MAX_IMAGES} images at once"
            status = 400
        for image in images:
            try:
                parse_image(image)
            except errors.RegistryError as exc:
                context["errors"]["images"] = f"{image}: {exc.message}"
                status = exc.status
                break
        if context["errors"]:
            return pages.render(page, "coverage.html", context, status=status)
        try:
            context["report"] = await coverage_of(
                page.hub.manifests, profiles, images, chosen, page.hub.router
            )
        except errors.RegistryError as exc:
            context["problem"] = exc.message
            return pages.render(page, "coverage.html", context, status=exc.status)
        return pages.render(page, "coverage.html", context)

    return handle

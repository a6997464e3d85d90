"""The plumbing every UI page shares: session, CSRF check, rendering, errors, security headers."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from metahub import errors
from metahub.hub import Hub
from metahub.oci import mediatypes
from metahub.server.database import database_unavailable, is_unavailable
from metahub.server.origin import origin_of
from metahub.server.ui.sessions import COOKIE, Session, SessionCodec, derive_key
from metahub.store.keys import signing_key

log = logging.getLogger("metahub.ui")

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
MAX_FIELDS = 200

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

HubGetter = Callable[[], Hub]


@dataclass(slots=True)
class Page:
    """One request to the UI: who asks, with which session, and the posted form if any."""

    request: Request
    hub: Hub
    session: Session
    form: FormData | None = None
    changed: bool = False  # the cookie must be written again
    signed_out: bool = False

    @property
    def base(self) -> str:
        """Where the UI is mounted (`/ui`), for links that survive a proxy's path prefix."""
        return str(self.request.scope.get("root_path", "")).rstrip("/")

    @property
    def admin(self) -> str:
        assert self.session.admin is not None
        return self.session.admin

    @property
    def address(self) -> str:
        return self.request.client.host if self.request.client else "unknown"

    def field(self, name: str) -> str:
        value = self.form.get(name, "") if self.form is not None else ""
        return value.strip() if isinstance(value, str) else ""

    def fields(self, name: str) -> list[str]:
        if self.form is None:
            return []
        return [v.strip() for v in self.form.getlist(name) if isinstance(v, str)]

    def start(self, session: Session) -> None:
        self.session, self.changed = session, True

    def flash(self, message: str) -> None:
        self.start(self.session.with_flash(message))

    def redirect(self, path: str, message: str | None = None) -> Response:
        if message is not None:
            self.flash(message)
        return RedirectResponse(self.base + path, status_code=303)


Handler = Callable[[Page], Awaitable[Response]]


class Pages:
    """Renders templates and wraps handlers with sign-in, CSRF and error handling."""

    def __init__(self, get_hub: HubGetter) -> None:
        self.get_hub = get_hub
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.tests["index"] = mediatypes.is_index
        self._codec: SessionCodec | None = None

    async def codec(self) -> SessionCodec:
        if self._codec is None:
            # The oldest signing key, the one the token service signs with on every replica.
            self._codec = SessionCodec(derive_key(await signing_key(self.get_hub().engine)))
        return self._codec

    def render(
        self,
        page: Page,
        template: str,
        context: Mapping[str, Any] | None = None,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        flash = page.session.flash
        if flash is not None:
            page.start(page.session.with_flash(None))  # shown once
        html = self.env.get_template(template).render(
            ui=page.base,
            admin=page.session.admin,
            csrf=page.session.csrf,
            flash=flash,
            path=page.request.url.path,
            **(context or {}),
        )
        return HTMLResponse(html, status_code=status, headers=dict(headers or {}))

    def error(self, page: Page, status: int, title: str, message: str) -> Response:
        return self.render(
            page,
            "error.html",
            {"title": title, "message": message, "status": status},
            status=status,
        )

    def handler(
        self, handle: Handler, *, admin: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            page = await self.open(request)
            try:
                response = await self._run(page, handle, admin=admin)
            except errors.RegistryError as exc:
                response = self.error(page, exc.status, _title(exc.status), exc.message)
                response.headers.update(exc.headers)
            except Exception as exc:
                if is_unavailable(exc):
                    path = request.url.path
                    trouble = database_unavailable(exc, page.hub, request.method, path)
                    response = self.error(page, trouble.status, _title(503), trouble.message)
                else:
                    log.exception("unhandled error on %s %s", request.method, request.url.path)
                    response = self.error(
                        page,
                        500,
                        "Something went wrong",
                        "The server could not answer; see its log.",
                    )
            return self.finish(page, response)

        return endpoint

    async def open(self, request: Request) -> Page:
        codec = await self.codec()
        raw = request.cookies.get(COOKIE)
        session = codec.loads(raw) if raw else None
        page = Page(request, self.get_hub(), session or Session.anonymous())
        page.changed = session is None
        return page

    async def _run(self, page: Page, handle: Handler, *, admin: bool) -> Response:
        if page.request.method == "POST":
            try:
                page.form = await page.request.form(max_files=0, max_fields=MAX_FIELDS)
            except (MultiPartException, HTTPException) as exc:
                reason = exc.detail if isinstance(exc, HTTPException) else exc.message
                return self.error(page, 400, "Bad request", f"The form could not be read: {reason}")
            if not page.session.csrf_ok(page.field("csrf")):
                return self.error(
                    page,
                    403,
                    "Form refused",
                    "This form has expired or did not come from this site. "
                    "Reload the page and send it again.",
                )
        if admin and not await self.signed_in(page):
            if page.session.admin is not None:  # signed out elsewhere, revoked or deleted
                page.start(Session.anonymous().with_flash("Your session has ended; sign in again."))
            target = page.request.url.path
            if page.request.method != "GET":
                target = page.base + "/"
            elif page.request.url.query:
                target += "?" + page.request.url.query
            return page.redirect(f"/sign-in?next={quote(target, safe='/')}")
        return await handle(page)

    async def signed_in(self, page: Page) -> bool:
        """The session's admin token is live (not revoked or expired, its admin not deleted)."""
        session = page.session
        if session.admin is None or session.token_id is None:
            return False
        return await page.hub.management.admin_for_token_id(session.token_id) == session.admin

    def finish(self, page: Page, response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if page.changed:
            response.set_cookie(
                COOKIE,
                self._codec.dumps(page.session) if self._codec is not None else "",
                max_age=max(0, page.session.expires - int(time.time())),
                path=page.base or "/",
                secure=_secure(page),
                httponly=True,
                samesite="strict",
            )
        return response

    async def not_found(self, request: Request, exc: Exception) -> Response:
        page = await self.open(request)
        response = self.error(page, 404, "Not found", f"There is no page at {request.url.path}.")
        return self.finish(page, response)

    async def method_not_allowed(self, request: Request, exc: Exception) -> Response:
        page = await self.open(request)
        response = self.error(
            page, 405, "Not allowed", f"{request.method} is not allowed on {request.url.path}."
        )
        response.headers["Allow"] = getattr(exc, "headers", {}).get("Allow", "GET")
        return self.finish(page, response)


def safe_next(page: Page, target: str) -> str:
    """A redirect target after sign-in: a path inside the UI, never another site."""
    parts = urlsplit(target)
    inside = page.base + "/"
    if parts.scheme or parts.netloc or not target.startswith(inside) or "\\" in target:
        return inside
    return target


def _secure(page: Page) -> bool:
    request = page.request
    return (
        request.url.scheme == "https"
        or origin_of(request.scope, page.hub.settings).scheme == "https"
    )


def _title(status: int) -> str:
    return {
        400: "Bad request",
        401: "Not signed in",
        403: "Forbidden",
        404: "Not found",
        409: "Conflict",
        422: "Invalid input",
        429: "Too many attempts",
        503: "Unavailable",
    }.get(status, "Something went wrong" if status >= 500 else "Request refused")


def field_errors(exc: errors.RegistryError) -> dict[str, str]:
    """The service's `detail: [{field, message}]` as {field: message}; else the whole message."""
    found: dict[str, str] = {}
    if isinstance(exc.detail, list):
        for item in exc.detail:
            if isinstance(item, dict) and "field" in item:
                found[str(item["field"])] = str(item.get("message", exc.message))
    elif isinstance(exc.detail, dict):
        for key in exc.detail:
            found[str(key)] = exc.message
    return found or {"form": exc.message}

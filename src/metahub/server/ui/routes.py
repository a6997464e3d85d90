"""The web UI's pages: sign-in, machine types, credentials, "try an image" and the audit log.

Every change goes through the ManagementService, as the management API's do, which tells the
registry side's directory so that it sees the change at once.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from metahub import errors
from metahub.auth.passwords import default_verifier
from metahub.errors import RegistryError
from metahub.management.records import Credential, MachineType
from metahub.oci.reference import parse_image
from metahub.server.origin import origin_of
from metahub.server.ui.coverage import coverage_page
from metahub.server.ui.pages import STATIC, HubGetter, Page, Pages, field_errors, safe_next
from metahub.server.ui.sessions import SESSION_TTL, Session
from metahub.server.ui.suggestions import feature_suggestions
from metahub.serving.explain import explanation_json

AUDIT_PAGE = 50
SESSION_TOKEN_NAME = "web UI session"


def create_ui(get_hub: HubGetter) -> Starlette:
    pages = Pages(get_hub)
    admin = pages.handler

    routes = [
        Route("/", admin(home)),
        Route("/sign-in", pages.handler(sign_in(pages), admin=False), methods=["GET", "POST"]),
        Route("/sign-out", admin(sign_out), methods=["POST"]),
        Route("/machine-types", admin(list_types(pages))),
        Route("/machine-types/-/new", admin(new_type(pages)), methods=["GET", "POST"]),
        Route("/machine-types/{name}", admin(show_type(pages))),
        Route("/machine-types/{name}/edit", admin(edit_type(pages)), methods=["GET", "POST"]),
        Route("/machine-types/{name}/delete", admin(delete_type), methods=["POST"]),
        Route(
            "/machine-types/{name}/credentials",
            admin(create_credential(pages)),
            methods=["POST"],
        ),
        Route("/credentials/{credential_id}/revoke", admin(revoke_credential), methods=["POST"]),
        Route("/try", admin(try_image(pages))),
        Route("/coverage", admin(coverage_page(pages))),
        Route("/audit", admin(audit(pages))),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={404: pages.not_found, 405: pages.method_not_allowed},
    )


# -- signing in and out ----------------------------------------------------------------------


async def home(page: Page) -> Response:
    return page.redirect("/machine-types")


def sign_in(pages: Pages) -> Any:
    async def handle(page: Page) -> Response:
        target = safe_next(page, page.request.query_params.get("next", ""))
        if page.request.method == "GET":
            if await pages.signed_in(page):
                return page.redirect(target.removeprefix(page.base))
            return pages.render(page, "sign_in.html", {"next": target, "login": "", "error": None})
        target = safe_next(page, page.field("next"))
        login = page.field("login")
        password = page.form.get("password", "") if page.form is not None else ""
        context = {"next": target, "login": login, "error": None}
        try:
            page.hub.login_failures.check(page.address)
        except errors.TooManyRequests as exc:
            context["error"] = exc.message
            return pages.render(page, "sign_in.html", context, status=429, headers=exc.headers)
        if not login or not isinstance(password, str) or not password:
            context["error"] = "Enter your login and password."
            return pages.render(page, "sign_in.html", context, status=400)
        if not await _password_ok(page, login, password):
            page.hub.login_failures.failed(page.address)
            context["error"] = "Wrong login or password."
            return pages.render(page, "sign_in.html", context, status=401)
        expires = int(time.time()) + SESSION_TTL
        issued = await page.hub.management.create_admin_token(
            login, login, SESSION_TOKEN_NAME, expires=datetime.fromtimestamp(expires, UTC)
        )
        # Only the token's id goes into the cookie: a stolen cookie is no API credential.
        page.start(Session.signed_in(login, issued.id, expires))
        return page.redirect(target.removeprefix(page.base))

    return handle


async def _password_ok(page: Page, login: str, password: str) -> bool:
    stored = await page.hub.management.admin_password_hash(login)
    # A missing admin costs what a wrong password does.
    return await default_verifier().verify(stored, password)


async def sign_out(page: Page) -> Response:
    if page.session.token_id is not None:
        with contextlib.suppress(errors.NotFound):  # revoked already, through the API
            await page.hub.management.revoke_admin_token(page.admin, page.session.token_id)
    page.start(Session.anonymous().with_flash("You are signed out."))
    return page.redirect("/sign-in")


# -- machine types ---------------------------------------------------------------------------


def list_types(pages: Pages) -> Any:
    async def handle(page: Page) -> Response:
        machine_types = await page.hub.management.list_machine_types()
        return pages.render(page, "types.html", {"machine_types": machine_types})

    return handle


@dataclass(slots=True)
class TypeForm:
    """A machine type as the form holds it, with the messages to show next to each field."""

    name: str = ""
    features: list[str] = field(default_factory=list)
    mode: str = "best"
    platforms: str = ""
    repositories: str = ""
    description: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, machine_type: MachineType) -> TypeForm:
        return cls(
            machine_type.name,
            list(machine_type.features),
            machine_type.mode,
            ", ".join(machine_type.platforms),
            ", ".join(machine_type.repositories),
            machine_type.description,
        )

    @classmethod
    def posted(cls, page: Page, name: str | None = None) -> TypeForm:
        return cls(
            name if name is not None else page.field("name"),
            [f for f in page.fields("feature") if f],
            page.field("mode") or "best",
            page.field("platforms"),
            page.field("repositories"),
            page.field("description"),
        )

    @property
    def platform_list(self) -> list[str]:
        return [p for p in re.split(r"[\s,]+", self.platforms) if p]

    @property
    def repository_list(self) -> list[str]:
        return [p for p in re.split(r"[\s,]+", self.repositories) if p]

    def refused(self, exc: RegistryError) -> None:
        for key, message in field_errors(exc).items():
            # The list fields are one input each: their errors go to that input.
            key = key.partition(".")[0] if key.startswith(("platforms.", "repositories.")) else key
            self.errors[key] = message


async def _type_form(
    pages: Pages, page: Page, form: TypeForm, *, editing: MachineType | None, status: int = 200
) -> Response:
    machine_types = await page.hub.management.list_machine_types()
    suggestions = feature_suggestions(machine_types, page.hub.settings.features.aliases)
    return pages.render(
        page,
        "type_form.html",
        {"form": form, "editing": editing, "suggestions": suggestions},
        status=status,
    )


async def _save_type(
    pages: Pages, page: Page, form: TypeForm, *, editing: MachineType | None
) -> Response:
    """Creates the machine type (or saves `editing`) and goes to its page; when the service
    refuses, the form again with its objections next to the fields."""
    management = page.hub.management
    try:
        if editing is None:
            created = await management.create_machine_type(
                page.admin,
                form.name,
                form.features,
                mode=form.mode,
                platforms=form.platform_list,
                repositories=form.repository_list,
                description=form.description,
            )
            name, done = created.name, "created"
        else:
            await management.update_machine_type(
                page.admin,
                form.name,
                features=form.features,
                mode=form.mode,
                platforms=form.platform_list,
                repositories=form.repository_list,
                description=form.description,
            )
            name, done = form.name, "saved"
    except errors.RegistryError as exc:
        if exc.status not in (409, 422):
            raise
        form.refused(exc)
        return await _type_form(pages, page, form, editing=editing, status=exc.status)
    return page.redirect(f"/machine-types/{name}", f"Machine type {name} {done}.")


def new_type(pages: Pages) -> Any:
    async def handle(page: Page) -> Response:
        if page.request.method == "GET":
            return await _type_form(pages, page, TypeForm(), editing=None)
        return await _save_type(pages, page, TypeForm.posted(page), editing=None)

    return handle


def edit_type(pages: Pages) -> Any:
    async def handle(page: Page) -> Response:
        name = page.request.path_params["name"]
        current = await page.hub.management.get_machine_type(name)
        if page.request.method == "GET":
            return await _type_form(pages, page, TypeForm.of(current), editing=current)
        return await _save_type(pages, page, TypeForm.posted(page, name), editing=current)

    return handle


async def delete_type(page: Page) -> Response:
    name = page.request.path_params["name"]
    await page.hub.management.delete_machine_type(page.admin, name)
    return page.redirect("/machine-types", f"Machine type {name} and its credentials deleted.")


@dataclass(slots=True)
class CredentialForm:
    login: str = ""
    expires: str = ""
    errors: dict[str, str] = field(default_factory=dict)


async def _type_page(
    pages: Pages,
    page: Page,
    name: str,
    credential_form: CredentialForm | None = None,
    *,
    status: int = 200,
) -> Response:
    machine_type = await page.hub.management.get_machine_type(name)
    credentials = await page.hub.management.list_credentials(name)
    return pages.render(
        page,
        "type.html",
        {
            "machine_type": machine_type,
            "credentials": [(c, _state(c)) for c in credentials],
            "credential_form": credential_form or CredentialForm(),
        },
        status=status,
    )


def show_type(pages: Pages) -> Any:
    async def handle(page: Page) -> Response:
        return await _type_page(pages, page, page.request.path_params["name"])

    return handle


# -- credentials -----------------------------------------------------------------------------


def create_credential(pages: Pages) -> Any:
    async def handle(page: Page) -> Response:
        name = page.request.path_params["name"]
        form = CredentialForm(page.field("login"), page.field("expires"))
        expires = None
        if form.expires:
            try:
                expires = datetime.fromisoformat(form.expires).replace(tzinfo=UTC)
            except ValueError:
                form.errors["expires"] = "use a date and time, e.g. 2030-01-31T12:00 (UTC)"
                return await _type_page(pages, page, name, form, status=422)
        try:
            issued = await page.hub.management.create_credential(
                page.admin, name, login=form.login or None, expires=expires
            )
        except errors.RegistryError as exc:
            if exc.status not in (409, 422):
                raise
            form.errors.update(field_errors(exc))
            return await _type_page(pages, page, name, form, status=exc.status)
        host = _registry_host(page)
        command = (
            f"printf '%s' '{issued.secret}' | "
            f"docker login -u {shlex.quote(issued.login)} --password-stdin {shlex.quote(host)}"
        )
        return pages.render(
            page,
            "credential.html",
            {"issued": issued, "machine_type": name, "host": host, "command": command},
            status=201,
        )

    return handle


async def revoke_credential(page: Page) -> Response:
    credential_id = page.request.path_params["credential_id"]
    revoked = await page.hub.management.revoke_credential(page.admin, credential_id)
    return page.redirect(
        f"/machine-types/{revoked.machine_type}",
        f"Credential {revoked.login} revoked; it no longer pulls, tokens included.",
    )


def _state(credential: Credential) -> str:
    if credential.revoked is not None:
        return "revoked"
    return "active" if credential.active else "expired"


def _registry_host(page: Page) -> str:
    """What `docker login` takes: the host (and port) clients reach this server at."""
    return origin_of(page.request.scope, page.hub.settings).host


# -- try an image ----------------------------------------------------------------------------


def try_image(pages: Pages) -> Any:
    async def handle(page: Page) -> Response:
        query = page.request.query_params
        image = query.get("image", "").strip()
        chosen_type = query.get("machine_type", "").strip()
        profiles = page.hub.profiles
        known = profiles.names()
        context: dict[str, Any] = {
            "image": image,
            "machine_type": chosen_type,
            "names": known,
            "errors": {},
            "problem": None,
            "explanations": [],
        }
        if "image" not in query:
            return pages.render(page, "try.html", context)
        status = 200
        if chosen_type and chosen_type not in known:
            context["errors"]["machine_type"] = f"machine type {chosen_type!r} does not exist"
            status = 404
        if not image:
            context["errors"]["image"] = "enter an image, e.g. qnib/bench:latest"
            status = 400
        else:
            try:
                name, reference = parse_image(image)
            except errors.RegistryError as exc:
                context["errors"]["image"] = exc.message
                status = exc.status
        if context["errors"]:
            return pages.render(page, "try.html", context, status=status)
        try:
            route = page.hub.router.route(name)
            for type_name in [chosen_type] if chosen_type else known:
                profile = profiles.named(type_name)
                filtering = await page.hub.manifests.explain(route.key, reference, profile)
                context["explanations"].append(explanation_json(image, route, profile, filtering))
        except errors.RegistryError as exc:
            context["problem"] = exc.message
            context["explanations"] = []
            return pages.render(page, "try.html", context, status=exc.status)
        return pages.render(page, "try.html", context)

    return handle


# -- audit log -------------------------------------------------------------------------------


def audit(pages: Pages) -> Any:
    async def handle(page: Page) -> Response:
        raw = page.request.query_params.get("before", "")
        before = None
        if raw:
            if not raw.isdigit() or int(raw) < 1:
                raise errors.InvalidRequest(
                    f"'before' must be an entry number, not {raw!r}", status=400
                )
            before = int(raw)
        entries = await page.hub.management.audit(limit=AUDIT_PAGE, before=before)
        older = entries[-1].id if len(entries) == AUDIT_PAGE and entries[-1].id > 1 else None
        return pages.render(page, "audit.html", {"entries": entries, "older": older})

    return handle

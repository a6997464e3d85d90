"""`metahub admin|machine-type|credential`: management on the database or a running server."""

from __future__ import annotations

import functools
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from metahub.cli.backend import backend_options, emit, new_table, show, with_backend

if TYPE_CHECKING:
    from rich.table import Table

    from metahub.management.backends import Backend


class Timestamp(click.ParamType[datetime]):
    """ISO 8601 date or time, with or without an offset; without one it is UTC."""

    name = "TIME"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a date or time like 2030-01-31 or 2030-01-31T12:00+02:00")
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def types_table(rows: list[dict[str, Any]]) -> Table:
    table = new_table("machine types")
    columns = ("name", "features", "mode", "platforms", "repositories", "credentials", "source")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["name"],
            ", ".join(row["features"]) or "-",
            row["mode"],
            ", ".join(row["platforms"]) or "any",
            ", ".join(row.get("repositories") or ()) or "all",
            str(row["credentials"]),
            "config" if row["config_managed"] else "database",
        )
    return table


def credentials_table(rows: list[dict[str, Any]]) -> Table:
    table = new_table("credentials")
    for column in ("id", "login", "machine type", "created", "expires", "state"):
        table.add_column(column)
    for row in rows:
        state = "active" if row["active"] else ("revoked" if row["revoked"] else "expired")
        table.add_row(
            row["id"],
            row["login"],
            row["machine_type"],
            (row["created"] or "-")[:19],
            (row["expires"] or "never")[:19],
            state,
        )
    return table


def say(data: Any, as_json: bool, message: str) -> None:
    """The API's JSON, or a message for a person."""
    if as_json:
        emit(data, True)
    else:
        click.echo(message)


def confirmed(yes: bool, question: str) -> None:
    """Go on only when --yes was given or the person agrees."""
    if not yes and not click.confirm(question):
        raise click.Abort()


def _secret_message(issued: dict[str, Any]) -> str:
    return f"login:    {issued['login']}\npassword: {issued['password']}  (shown once)"


@click.group("admin")
def admin() -> None:
    """Administrators of the management API and UI."""


@admin.command("create")
@backend_options
@click.option("--login", required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--token-name", default="cli", show_default=True)
@with_backend
async def admin_create(
    backend: Backend, as_json: bool, login: str, password_stdin: bool, token_name: str
) -> None:
    """Create an admin and print an API token for it (shown once)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    await backend.create_admin(login, password)
    issued = await backend.create_admin_token(login, token_name)
    say(issued, as_json, f"admin {login} created; API token (shown once): {issued['token']}")


@admin.command("list")
@backend_options
@with_backend
async def admin_list(backend: Backend, as_json: bool) -> None:
    """List admins."""
    logins = await backend.list_admins()
    if as_json:
        emit(logins, True)
    else:
        for login in logins:
            click.echo(login)


def acting_on(
    argument: str, *, asks: bool = False
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Any]]:
    """The options of a command on one thing: where to work, ARGUMENT, and --yes if it asks."""

    def decorate(function: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        command = with_backend(function)
        if asks:
            command = click.option("--yes", is_flag=True, help="Do not ask.")(command)
        return backend_options(click.argument(argument)(command))

    return decorate


@admin.command("delete")
@acting_on("login", asks=True)
async def admin_delete(backend: Backend, as_json: bool, login: str, yes: bool) -> None:
    """Delete an admin and its tokens."""
    confirmed(yes, f"delete admin {login} and its tokens?")
    await backend.delete_admin(login)
    say({"deleted": login}, as_json, f"deleted admin {login}")


@admin.group("token")
def admin_token() -> None:
    """API tokens of admins."""


def tokens_table(rows: list[dict[str, Any]]) -> Table:
    table = new_table("admin tokens")
    for column in ("id", "admin", "name", "created", "expires", "state"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["id"],
            row["admin"],
            row["name"],
            (row["created"] or "-")[:19],
            (row["expires"] or "never")[:19],
            "revoked" if row["revoked"] else "active",
        )
    return table


@admin_token.command("create")
@backend_options
@click.argument("login")
@click.option("--name", default="cli", show_default=True, help="What the token is for.")
@click.option("--expires", type=Timestamp(), help="When it stops working (UTC unless given).")
@with_backend
async def admin_token_create(
    backend: Backend, as_json: bool, login: str, name: str, expires: datetime | None
) -> None:
    """Create an API token for an admin (shown once)."""
    issued = await backend.create_admin_token(login, name, expires)
    message = f"API token for {login} (shown once): {issued['token']}\nid: {issued['id']}"
    say(issued, as_json, message)


@admin_token.command("list")
@acting_on("login")
async def admin_token_list(backend: Backend, as_json: bool, login: str) -> None:
    """List an admin's tokens (never the tokens themselves)."""
    emit(await backend.list_admin_tokens(login), as_json, tokens_table)


@admin_token.command("revoke")
@acting_on("token_id")
async def admin_token_revoke(backend: Backend, as_json: bool, token_id: str) -> None:
    """Revoke an admin token at once."""
    await backend.revoke_admin_token(token_id)
    say({"revoked": token_id}, as_json, f"revoked token {token_id}")


@click.group("machine-type")
def machine_type() -> None:
    """Machine types: the feature sets machines log in as."""


def machine_type_fields(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that set a machine type's fields, handed to `command` as one `changes` dict."""

    @click.option("--feature", "features", multiple=True, help="key:value; repeat.")
    @click.option("--mode", type=click.Choice(["best", "exact"]))
    @click.option("--platform", "platforms", multiple=True, help="os/arch[/variant].")
    @click.option(
        "--repository",
        "repositories",
        multiple=True,
        help="registry/repository pattern it may pull (docker.io/library/*, ghcr.io/acme/**); "
        "repeat. Without any: every repository.",
    )
    @click.option(
        "--all-repositories",
        is_flag=True,
        help="Drop the repository patterns: it may pull every repository.",
    )
    @click.option("--description")
    @functools.wraps(command)
    def with_changes(
        *args: Any,
        features: tuple[str, ...],
        mode: str | None,
        platforms: tuple[str, ...],
        repositories: tuple[str, ...],
        all_repositories: bool,
        description: str | None,
        **kwargs: Any,
    ) -> Any:
        if repositories and all_repositories:
            raise click.UsageError("give --repository or --all-repositories, not both")
        changes: dict[str, Any] = {}
        if repositories or all_repositories:
            changes["repositories"] = list(repositories)
        if features:
            changes["features"] = list(features)
        if mode is not None:
            changes["mode"] = mode
        if platforms:
            changes["platforms"] = list(platforms)
        if description is not None:
            changes["description"] = description
        return command(*args, changes=changes, **kwargs)

    return with_changes


@machine_type.command("add")
@backend_options
@click.argument("name")
@machine_type_fields
@with_backend
async def machine_type_add(
    backend: Backend, as_json: bool, name: str, changes: dict[str, Any]
) -> None:
    """Add a machine type."""
    body = {"name": name, **changes}
    emit(await backend.create_machine_type(body), as_json, types_table)


@machine_type.command("list")
@backend_options
@with_backend
async def machine_type_list(backend: Backend, as_json: bool) -> None:
    """List machine types."""
    emit(await backend.list_machine_types(), as_json, types_table)


@machine_type.command("show")
@acting_on("name")
async def machine_type_show(backend: Backend, as_json: bool, name: str) -> None:
    """Show a machine type and its credentials."""
    found = await backend.get_machine_type(name)
    creds = await backend.list_credentials(name)
    if as_json:
        emit({**found, "credential_list": creds}, True)
    else:
        show(types_table([found]), credentials_table(creds))


@machine_type.command("update")
@backend_options
@click.argument("name")
@machine_type_fields
@with_backend
async def machine_type_update(
    backend: Backend, as_json: bool, name: str, changes: dict[str, Any]
) -> None:
    """Change a machine type (given --feature/--platform/--repository lists replace the old
    ones)."""
    if not changes:
        raise click.UsageError(
            "nothing to change: give --feature, --mode, --platform, --repository, "
            "--all-repositories or --description"
        )
    emit(await backend.update_machine_type(name, changes), as_json, types_table)


@machine_type.command("delete")
@acting_on("name", asks=True)
async def machine_type_delete(backend: Backend, as_json: bool, name: str, yes: bool) -> None:
    """Delete a machine type and its credentials."""
    confirmed(yes, f"delete {name} and its credentials?")
    await backend.delete_machine_type(name)
    say({"deleted": name}, as_json, f"deleted {name}")


@click.group("credential")
def credential() -> None:
    """Logins for machine types."""


@credential.command("create")
@backend_options
@click.argument("machine_type_name", metavar="MACHINE_TYPE")
@click.option("--login", help="Default: <machine type>-<random>.")
@click.option(
    "--expires", type=Timestamp(), help="When the login stops working (UTC unless given)."
)
@with_backend
async def credential_create(
    backend: Backend,
    as_json: bool,
    machine_type_name: str,
    login: str | None,
    expires: datetime | None,
) -> None:
    """Create a login for a machine type; the password is shown once."""
    body = {"login": login, "expires": expires}
    issued = await backend.create_credential(machine_type_name, body)
    say(issued, as_json, f"{_secret_message(issued)}\nid:       {issued['id']}")


@credential.command("list")
@backend_options
@click.option("--machine-type", "machine_type_name")
@with_backend
async def credential_list(backend: Backend, as_json: bool, machine_type_name: str | None) -> None:
    """List logins (never their secrets)."""
    emit(await backend.list_credentials(machine_type_name), as_json, credentials_table)


@credential.command("revoke")
@acting_on("credential_id")
async def credential_revoke(backend: Backend, as_json: bool, credential_id: str) -> None:
    """Revoke a login at once (every replica refuses it within seconds)."""
    emit(await backend.revoke_credential(credential_id), as_json, credentials_table)


@credential.command("rotate")
@acting_on("credential_id")
async def credential_rotate(backend: Backend, as_json: bool, credential_id: str) -> None:
    """Give a login a new password (shown once); the old one stops working."""
    issued = await backend.rotate_credential(credential_id)
    say(issued, as_json, _secret_message(issued))


@credential.command("expire")
@backend_options
@click.argument("credential_id")
@click.option("--at", type=Timestamp(), help="When it stops working; default: now.")
@with_backend
async def credential_expire(
    backend: Backend, as_json: bool, credential_id: str, at: datetime | None
) -> None:
    """Make a login stop working now, or at a given time."""
    when = at if at is not None else datetime.now(UTC)
    emit(await backend.expire_credential(credential_id, when), as_json, credentials_table)

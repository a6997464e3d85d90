"""`metahub detect` and `metahub login`: the host tools (host/) behind their options."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

# The host tools are imported inside the commands: login brings aiohttp, which would slow
# every command's start.
if TYPE_CHECKING:
    from metahub.host.detect import HostReport

PASSWORD_ENV = "METAHUB_PASSWORD"


@click.command("detect")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of lines.")
@click.option(
    "--cloud",
    is_flag=True,
    help="Also ask the cloud metadata service (EC2, GCE, Azure) for the instance type.",
)
def detect_command(as_json: bool, cloud: bool) -> None:
    """Print this host's features, one per line: cpu, platform, nvcap per GPU, driver, cuda, ht."""
    from metahub.host.detect import detect

    report = detect(with_cloud=cloud)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    for line in report.features:
        click.echo(line)


@click.command("login")
@click.argument("server_text", metavar="SERVER")
@click.option(
    "--account", help="Log in with a profile login of this account and this host's features."
)
@click.option(
    "--machine-type",
    help="Log in with this machine type's credential (its login is NAME unless --login says).",
)
@click.option("--login", help="The credential's login, when it differs from the type's name.")
@click.option(
    "--skip",
    multiple=True,
    metavar="KEY",
    help="Leave a detected feature out of the profile login (repeatable), e.g. --skip ht.",
)
@click.option(
    "--cloud", is_flag=True, help="Add the cloud instance type (instType) to the features."
)
@click.option(
    "--password-stdin", is_flag=True, help=f"Read the password from stdin (else ${PASSWORD_ENV})."
)
@click.option("--insecure", is_flag=True, help="Fall back to plain HTTP for a non-loopback server.")
@click.option(
    "--print",
    "print_only",
    is_flag=True,
    help="Only print the docker login command for this host; write nothing. With a password "
    "the login is checked first; without one nothing is contacted.",
)
@click.option(
    "--mirror",
    "mirrors",
    multiple=True,
    metavar="REGISTRY[=PREFIX]",
    help="Also send this registry's pulls through SERVER (repeatable): writes containerd's "
    "hosts.toml and a registries.conf.d drop-in for podman and CRI-O. PREFIX is SERVER's path "
    "prefix for it (default: the registry's name).",
)
@click.option(
    "--containerd-hosts-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default="/etc/containerd/certs.d",
    show_default=True,
    help="containerd's hosts directory (its registry config_path).",
)
@click.option(
    "--registries-conf-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default="/etc/containers/registries.conf.d",
    show_default=True,
    help="Where podman and CRI-O read registries.conf drop-ins.",
)
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1))
def login_command(
    server_text: str,
    account: str | None,
    machine_type: str | None,
    login: str | None,
    skip: tuple[str, ...],
    cloud: bool,
    password_stdin: bool,
    insecure: bool,
    print_only: bool,
    mirrors: tuple[str, ...],
    containerd_hosts_dir: Path,
    registries_conf_dir: Path,
    timeout: float,
) -> None:
    """Log this host in to the MetaHub at SERVER, for docker and podman alike.

    Checks the login against SERVER, then writes it to docker's config.json ($DOCKER_CONFIG or
    ~/.docker) and containers' auth.json ($REGISTRY_AUTH_FILE or
    $XDG_RUNTIME_DIR/containers/auth.json). The password comes from --password-stdin or
    $METAHUB_PASSWORD, never from an argument.

    With --mirror, pulls of that registry by its own names (docker.io/library/alpine) go
    through SERVER too: containerd's hosts.toml (with the login as a static header) and a
    podman/CRI-O mirror whose login is written to auth.json under the mirror's location.
    """
    from metahub.host.authfiles import check_auth_file, containers_auth_path, docker_config_path
    from metahub.host.errors import HostError
    from metahub.host.login import (
        LoginRefused,
        docker_login_line,
        log_in,
        parse_server,
        write_login,
    )
    from metahub.host.mirrors import mirror_location, parse_mirror, write_mirror_files

    try:
        server = parse_server(server_text, insecure=insecure)
        chosen_mirrors = [parse_mirror(text) for text in mirrors]
        if print_only and chosen_mirrors:
            raise click.UsageError("--print writes nothing; it takes no --mirror")
        chosen = _choose_login(account, machine_type, login, skip, cloud)
        if print_only and not password_stdin and PASSWORD_ENV not in os.environ:
            click.echo(docker_login_line(server, chosen))
            return
        password = _password(password_stdin)
        paths = [docker_config_path(), containers_auth_path()]
        if not print_only:
            for path in paths:  # a damaged file fails the login before anything is written
                check_auth_file(path)
        verified = log_in(server, chosen, password, timeout=timeout)
    except LoginRefused as exc:
        raise click.ClickException(f"{server_text} refused the login: {exc}") from exc
    except HostError as exc:
        raise click.ClickException(str(exc)) from exc
    for note in verified.notes:
        click.echo(f"note: {note}", err=True)
    if machine_type is not None and verified.machine_type != machine_type:
        got = verified.machine_type or "an unknown machine type"
        raise click.ClickException(
            f"login {verified.login!r} belongs to {got!r}, not machine type {machine_type!r}; "
            "nothing was written"
        )
    if print_only:
        click.echo(docker_login_line(server, verified.login))
        return
    try:
        written, warnings = write_login(server, verified.login, password, paths)
        mirror_files = []
        for mirror in chosen_mirrors:
            mirror_files += write_mirror_files(
                mirror,
                metahub_url=verified.url,
                server_key=server.key,
                login=verified.login,
                password=password,
                containerd_hosts_dir=containerd_hosts_dir,
                registries_conf_dir=registries_conf_dir,
            )
            location = mirror_location(server.key, mirror)
            written += write_login(
                replace(server, key=location), verified.login, password, [paths[1]]
            )[0]
    except HostError as exc:
        raise click.ClickException(str(exc)) from exc
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    served_as = (
        f" (machine type {verified.machine_type})"
        if verified.machine_type not in (None, verified.login)
        else ""
    )
    click.echo(f"Login Succeeded: {verified.login} at {server.key}{served_as}")
    for path in dict.fromkeys(written):
        click.echo(f"wrote {path}")
    for file in mirror_files:
        click.echo(f"{'wrote' if file.changed else 'unchanged'} {file.path}")


def _choose_login(
    account: str | None,
    machine_type: str | None,
    login: str | None,
    skip: tuple[str, ...],
    cloud: bool,
) -> str:
    from metahub.host.detect import detect
    from metahub.host.profile_names import profile_login

    if account is not None and (login is not None or machine_type is not None):
        raise click.UsageError(
            "--account makes a profile login; it takes no --login/--machine-type"
        )
    if account is not None:
        if "/" in account or ":" in account:
            raise click.UsageError("--account is the account's name alone, e.g. hpc")
        report: HostReport = detect(with_cloud=cloud)
        return profile_login(account, report.features, skip)
    if login is not None or machine_type is not None:
        # A credential's login names its machine type only by convention; --login says it.
        chosen = login if login is not None else machine_type
        assert chosen is not None
        return chosen
    raise click.UsageError(
        "say how to log in: --account NAME (a profile login from this host's features) "
        "or --machine-type NAME [--login LOGIN] (a machine type's credential)"
    )


def _password(from_stdin: bool) -> str:
    from metahub.host.profile_names import LoginError

    if from_stdin:
        password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    elif PASSWORD_ENV in os.environ:
        password = os.environ[PASSWORD_ENV]
    elif sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, err=True)
    else:
        raise LoginError(f"no password: pipe it in with --password-stdin, or set {PASSWORD_ENV}")
    if not password:
        raise LoginError("the password is empty")
    return password

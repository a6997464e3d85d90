"""The `metahub push` and `metahub inspect` commands."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from metahub.images.errors import ImageError
from metahub.images.spec import ImageRef, InvalidReference, SpecError, load_spec

# The registry client and what uses it are imported inside the commands: they bring aiohttp
# (and rich), which would slow every command's start.
if TYPE_CHECKING:
    from rich.console import Console

    from metahub.images.index import IndexType
    from metahub.publish.credentials import Credentials

# Wide enough that digests are never wrapped when the output goes to a file or a pipe.
PIPE_WIDTH = 200


def _console(*, stderr: bool) -> Console:
    from rich.console import Console

    console = Console(stderr=stderr)
    if not console.is_terminal:
        console = Console(stderr=stderr, width=PIPE_WIDTH)
    return console


def _creds(text: str | None) -> Credentials | None:
    from metahub.publish.credentials import CredentialsError, parse_credentials

    if text is None:
        return None
    try:
        return parse_credentials(text)
    except CredentialsError as exc:
        raise click.BadParameter(str(exc), param_hint="--creds") from exc


@click.command("push")
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--type",
    "index_type",
    type=click.Choice(["oci", "docker"]),
    default="oci",
    show_default=True,
    help="An OCI image index, or a Docker manifest list.",
)
@click.option("--creds", metavar="USER:PASSWORD", help="Login for the target registry.")
@click.option("--dry-run", is_flag=True, help="Print the index and push nothing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress and no notes; only the result.")
@click.option("--insecure", is_flag=True, help="Plain HTTP to registries not on loopback.")
def push_command(
    spec_path: Path,
    index_type: str,
    creds: str | None,
    dry_run: bool,
    quiet: bool,
    insecure: bool,
) -> None:
    """Build a feature-tagged index from the images SPEC names and push it with every tag.

    SPEC is manifest-tool's YAML (image, tags, manifests[].image, manifests[].platform with
    architecture, os, variant, features, osversion, osfeatures; annotations). Members in other
    repositories of the target registry are mounted, others copied. Credentials come from
    --creds (target registry) or docker's config.json.
    """
    from metahub.publish.progress import RichReporter
    from metahub.publish.push import Clients, push

    try:
        spec = load_spec(spec_path)
    except SpecError as exc:
        raise click.ClickException(str(exc)) from exc
    target = spec.ref
    clients = Clients(target.host, _creds(creds), insecure=insecure)
    err = _console(stderr=True)

    async def run() -> None:
        try:
            with RichReporter(err, quiet=quiet) as reporter:
                result = await push(
                    spec,
                    clients,
                    index_type=cast("IndexType", index_type),
                    dry_run=dry_run,
                    reporter=reporter,
                )
        finally:
            await clients.close()
        if dry_run:
            sys.stdout.buffer.write(result.index.data + b"\n")
            sys.stdout.flush()
            if not quiet:
                err.print(
                    f"dry run: {result.index.digest} ({len(result.entries)} entries) "
                    f"would be pushed to {target.host}/{target.repository} as "
                    f"{', '.join(result.tags)}",
                    highlight=False,
                    soft_wrap=True,
                )
            return
        if not quiet:
            err.print(
                f"blobs: {result.count('mounted')} mounted, {result.count('copied')} copied, "
                f"{result.count('present')} already there; "
                f"{result.manifests_pushed} manifests pushed",
                highlight=False,
                soft_wrap=True,
            )
        for ref in result.refs():
            click.echo(ref)

    try:
        asyncio.run(run())
    except ImageError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command("inspect")
@click.argument("reference", metavar="REF")
@click.option("--creds", metavar="USER:PASSWORD", help="Login (else docker's config.json).")
@click.option("--raw", is_flag=True, help="Print the manifest or index bytes exactly.")
@click.option("--insecure", is_flag=True, help="Plain HTTP to a registry not on loopback.")
def inspect_command(reference: str, creds: str | None, raw: bool, insecure: bool) -> None:
    """Show the index (or manifest) REF names: platforms, features, digests, sizes.

    Against MetaHub it shows what that login receives.
    """
    from metahub.publish.client import RegistryClient
    from metahub.publish.credentials import docker_credentials
    from metahub.publish.inspect import fetch, render

    try:
        ref = ImageRef.parse(reference)
    except InvalidReference as exc:
        raise click.BadParameter(str(exc), param_hint="REF") from exc

    async def run() -> None:
        login = _creds(creds) or docker_credentials(ref.host)
        async with RegistryClient(ref.host, login, insecure=insecure) as client:
            inspected = await fetch(client, ref, with_config=not raw)
        if raw:
            sys.stdout.buffer.write(inspected.manifest.data)
            sys.stdout.flush()
        else:
            render(_console(stderr=False), inspected)

    try:
        asyncio.run(run())
    except ImageError as exc:
        raise click.ClickException(str(exc)) from exc

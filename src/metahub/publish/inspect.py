"""`metahub inspect`: what a registry answers for a reference, as a table or as raw bytes.

It asks the way runtimes do (every index and manifest type accepted), so against MetaHub it
shows what that login receives: the index filtered for its machine type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from metahub.images.members import MAX_CONFIG_BYTES, Fetched, is_attestation
from metahub.images.spec import ImageRef
from metahub.oci import mediatypes
from metahub.publish.client import RegistryClient


@dataclass(frozen=True, slots=True)
class Inspected:
    ref: ImageRef
    manifest: Fetched
    config: dict[str, Any] | None = None  # a single image's config, for its platform


async def fetch(client: RegistryClient, ref: ImageRef, *, with_config: bool) -> Inspected:
    fetched = await client.manifest(ref.remote_repository, ref.reference)
    config = None
    if with_config and fetched.media_type in mediatypes.IMAGE_MANIFEST_TYPES:
        document = orjson.loads(fetched.data)
        descriptor = document.get("config") if isinstance(document, dict) else None
        if isinstance(descriptor, dict) and isinstance(descriptor.get("digest"), str):
            data = await client.blob(ref.remote_repository, descriptor["digest"], MAX_CONFIG_BYTES)
            loaded = orjson.loads(data)
            config = loaded if isinstance(loaded, dict) else None
    return Inspected(ref, fetched, config)


def render(console: Console, inspected: Inspected) -> None:
    fetched = inspected.manifest
    document = orjson.loads(fetched.data)
    console.print(f"[bold]{inspected.ref}[/bold]", highlight=False)
    console.print(f"Digest:     {fetched.digest}", highlight=False)
    console.print(f"Media type: {fetched.media_type}", highlight=False)
    console.print(f"Size:       {len(fetched.data)}", highlight=False)
    if not isinstance(document, dict):
        return
    annotations = document.get("annotations")
    if isinstance(annotations, dict) and annotations:
        console.print("Annotations:", highlight=False)
        for key, value in annotations.items():
            console.print(f"  {key}: {value}", highlight=False)
    if mediatypes.is_index(fetched.media_type):
        console.print(_index_table(document))
    else:
        _render_image(console, document, inspected.config)


def _index_table(document: dict[str, Any]) -> Table:
    table = Table(title=None, show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("platform", no_wrap=True)
    table.add_column("features")
    table.add_column("digest", no_wrap=True)
    table.add_column("size", justify="right")
    table.add_column("media type", no_wrap=True)
    manifests = document.get("manifests")
    for position, entry in enumerate(manifests if isinstance(manifests, list) else ()):
        if not isinstance(entry, dict):
            continue
        platform = entry.get("platform")
        features = platform.get("features") if isinstance(platform, dict) else None
        table.add_row(
            str(position),
            platform_text(platform) + (" (attestation)" if is_attestation(entry) else ""),
            ", ".join(features) if isinstance(features, list) and features else "",
            str(entry.get("digest", "")),
            str(entry.get("size", "")),
            str(entry.get("mediaType", "")),
        )
    return table


def _render_image(
    console: Console, document: dict[str, Any], config: dict[str, Any] | None
) -> None:
    if config is not None:
        console.print(f"Platform:   {platform_text(config)}", highlight=False)
    descriptor = document.get("config")
    if isinstance(descriptor, dict):
        console.print(
            f"Config:     {descriptor.get('digest')} ({descriptor.get('size')} bytes)",
            highlight=False,
        )
    table = Table()
    table.add_column("layer", justify="right")
    table.add_column("digest", no_wrap=True)
    table.add_column("size", justify="right")
    table.add_column("media type", no_wrap=True)
    layers = document.get("layers")
    for position, layer in enumerate(layers if isinstance(layers, list) else ()):
        if isinstance(layer, dict):
            table.add_row(
                str(position),
                str(layer.get("digest", "")),
                str(layer.get("size", "")),
                str(layer.get("mediaType", "")),
            )
    console.print(table)


def platform_text(platform: object) -> str:
    if not isinstance(platform, dict):
        return "-"
    text = f"{platform.get('os', '?')}/{platform.get('architecture', '?')}"
    if platform.get("variant"):
        text += f"/{platform['variant']}"
    if platform.get("os.version"):
        text += f" ({platform['os.version']})"
    return text

"""An OCI layout upstream reads only files inside its directory, links followed.

A blob, manifest or index.json that is a link to a file elsewhere (`/etc/passwd`, here a secret
file beside the layout), or that lies in a directory linking elsewhere, is not served; links
that stay inside the layout are followed as before.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from metahub import errors
from metahub.oci.layout_writer import LayoutWriter
from metahub.upstream.base import ByteRange
from metahub.upstream.layout import OciLayoutUpstream


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, str, str]:
    """A one-repository layout `app` with a manifest and a layer; returns its root and digests."""
    root = tmp_path / "layouts"
    writer = LayoutWriter(root / "app")
    layer = writer.add_blob(b"layer bytes" * 100, "application/vnd.oci.image.layer.v1.tar")
    manifest = writer.add_json(
        {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"},
        "application/vnd.oci.image.manifest.v1+json",
    )
    writer.tag("latest", manifest)
    writer.save()
    return root, str(layer["digest"]), str(manifest["digest"])


def blob_file(layout_root: Path, digest: str) -> Path:
    algorithm, hex_digest = digest.split(":", 1)
    return layout_root / "blobs" / algorithm / hex_digest


def secret(tmp_path: Path) -> Path:
    outside = tmp_path / "secret"
    outside.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    return outside


async def test_a_layout_blob_linking_out_of_the_layout_is_blob_unknown(
    layout: tuple[Path, str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    root, layer, _ = layout
    target = blob_file(root / "app", layer)
    target.unlink()
    target.symlink_to(secret(tmp_path))
    upstream = OciLayoutUpstream(root)

    with pytest.raises(errors.BlobUnknown):
        await upstream.blob_size("app", layer)
    with caplog.at_level(logging.WARNING), pytest.raises(errors.BlobUnknown):
        stream = await upstream.open_blob("app", layer, ByteRange(0, 9))
        b"".join([chunk async for chunk in stream.chunks])
    assert any(str(target) in record.getMessage() for record in caplog.records)


async def test_a_layout_blob_in_a_directory_linking_out_is_blob_unknown(
    layout: tuple[Path, str, str], tmp_path: Path
):
    root, layer, _ = layout
    elsewhere = tmp_path / "elsewhere"
    blobs = root / "app" / "blobs" / "sha256"
    blobs.rename(elsewhere)
    blobs.symlink_to(elsewhere)

    with pytest.raises(errors.BlobUnknown):
        await OciLayoutUpstream(root).open_blob("app", layer)


async def test_a_link_that_stays_inside_the_layout_is_followed(layout: tuple[Path, str, str]):
    root, layer, _ = layout
    target = blob_file(root / "app", layer)
    kept = root / "shared-blob"
    target.rename(kept)
    target.symlink_to(kept)

    stream = await OciLayoutUpstream(root).open_blob("app", layer)
    data = b"".join([chunk async for chunk in stream.chunks])

    assert data == kept.read_bytes()


async def test_a_layout_manifest_linking_out_of_the_layout_is_manifest_unknown(
    layout: tuple[Path, str, str], tmp_path: Path
):
    root, _, manifest = layout
    target = blob_file(root / "app", manifest)
    outside = tmp_path / "manifest.json"
    outside.write_bytes(target.read_bytes())
    target.unlink()
    target.symlink_to(outside)
    upstream = OciLayoutUpstream(root)

    with pytest.raises(errors.ManifestUnknown):
        await upstream.get_manifest("app", "latest")
    with pytest.raises(errors.ManifestUnknown):
        await upstream.get_manifest("app", manifest)


async def test_an_index_json_linking_out_of_the_layout_is_refused(
    layout: tuple[Path, str, str], tmp_path: Path
):
    root, _, _ = layout
    index = root / "app" / "index.json"
    outside = tmp_path / "index.json"
    outside.write_bytes(index.read_bytes())
    index.unlink()
    index.symlink_to(outside)

    with pytest.raises(errors.UpstreamError, match="outside") as raised:
        await OciLayoutUpstream(root).tags("app")
    assert str(root) in raised.value.message

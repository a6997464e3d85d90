"""Tests for the OCI image layout writer, checked against the files on disk."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from metahub.oci.layout_writer import (
    ANNOTATION_REF_NAME,
    MEDIA_TYPE_IMAGE_CONFIG,
    MEDIA_TYPE_IMAGE_INDEX,
    MEDIA_TYPE_IMAGE_MANIFEST,
    MEDIA_TYPE_LAYER_TAR_GZIP,
    LayoutWriter,
    image,
    image_index,
    make_layer,
    read_refs,
)


def blob_path(layout: Path, digest: str) -> Path:
    algorithm, hex_digest = digest.split(":", 1)
    assert algorithm == "sha256"
    return layout / "blobs" / "sha256" / hex_digest


def read_blob(layout: Path, descriptor: dict[str, Any]) -> bytes:
    """Read a blob and check it against its descriptor's digest and size."""
    data = blob_path(layout, descriptor["digest"]).read_bytes()
    assert descriptor["digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert descriptor["size"] == len(data)
    return data


def assert_layout_consistent(layout: Path) -> None:
    """Every blob is named by its sha256; every descriptor reachable from index.json matches."""
    assert json.loads((layout / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    for blob in (layout / "blobs" / "sha256").iterdir():
        assert blob.name == hashlib.sha256(blob.read_bytes()).hexdigest()
    pending = list(json.loads((layout / "index.json").read_bytes())["manifests"])
    while pending:
        descriptor = pending.pop()
        data = read_blob(layout, descriptor)
        if descriptor["mediaType"] == MEDIA_TYPE_IMAGE_INDEX:
            pending.extend(json.loads(data)["manifests"])
        elif descriptor["mediaType"] == MEDIA_TYPE_IMAGE_MANIFEST:
            manifest = json.loads(data)
            assert manifest["mediaType"] == MEDIA_TYPE_IMAGE_MANIFEST
            config = json.loads(read_blob(layout, manifest["config"]))
            layers = [read_blob(layout, layer) for layer in manifest["layers"]]
            diff_ids = ["sha256:" + hashlib.sha256(gzip.decompress(b)).hexdigest() for b in layers]
            assert config["rootfs"] == {"type": "layers", "diff_ids": diff_ids}


def test_new_layout_has_marker_and_blob_dir(tmp_path: Path) -> None:
    LayoutWriter(tmp_path / "layout")
    assert (tmp_path / "layout" / "oci-layout").read_bytes() == b'{"imageLayoutVersion":"1.0.0"}'
    assert (tmp_path / "layout" / "blobs" / "sha256").is_dir()


def test_rejects_unknown_layout_version(tmp_path: Path) -> None:
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion":"9.9.9"}')
    with pytest.raises(ValueError, match="imageLayoutVersion"):
        LayoutWriter(tmp_path)


def test_add_blob_is_content_addressed(tmp_path: Path) -> None:
    writer = LayoutWriter(tmp_path)
    data = b"hello blob"
    descriptor = writer.add_blob(data, "application/octet-stream")
    hex_digest = hashlib.sha256(data).hexdigest()
    assert descriptor == {
        "mediaType": "application/octet-stream",
        "digest": f"sha256:{hex_digest}",
        "size": len(data),
    }
    assert (tmp_path / "blobs" / "sha256" / hex_digest).read_bytes() == data
    assert writer.add_blob(data, "application/octet-stream") == descriptor
    assert [p.name for p in (tmp_path / "blobs" / "sha256").iterdir()] == [hex_digest]


def test_add_json_is_compact_and_deterministic(tmp_path: Path) -> None:
    writer = LayoutWriter(tmp_path)
    first = writer.add_json({"b": [1, 2], "a": {"y": 1, "x": "z"}}, "application/json")
    second = writer.add_json({"a": {"x": "z", "y": 1}, "b": [1, 2]}, "application/json")
    assert first == second
    assert blob_path(tmp_path, str(first["digest"])).read_bytes() == (
        b'{"a":{"x":"z","y":1},"b":[1,2]}'
    )


def test_tag_save_and_incremental_reload(tmp_path: Path) -> None:
    writer = LayoutWriter(tmp_path)
    one = writer.add_blob(b"one", "application/octet-stream")
    two = writer.add_blob(b"two", "application/octet-stream")
    writer.tag("repo:a", one)
    writer.tag("repo:b", two)
    writer.save()

    reopened = LayoutWriter(tmp_path)
    assert reopened.lookup("repo:a") == {**one, "annotations": {ANNOTATION_REF_NAME: "repo:a"}}
    reopened.tag("repo:a", two)  # replacing keeps the entry's position
    reopened.save()

    index = json.loads((tmp_path / "index.json").read_bytes())
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == MEDIA_TYPE_IMAGE_INDEX
    names = [m["annotations"][ANNOTATION_REF_NAME] for m in index["manifests"]]
    assert names == ["repo:a", "repo:b"]
    assert index["manifests"][0]["digest"] == two["digest"]
    assert set(read_refs(tmp_path)) == {"repo:a", "repo:b"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs", "index.json", "oci-layout"]
    assert (tmp_path / "index.json").stat().st_mode & 0o777 == 0o644
    assert_layout_consistent(tmp_path)


def test_tag_keeps_other_annotations(tmp_path: Path) -> None:
    writer = LayoutWriter(tmp_path)
    descriptor = writer.add_blob(b"x", "application/octet-stream")
    writer.tag("r:1", {**descriptor, "annotations": {"org.example": "kept"}})
    entry = writer.lookup("r:1")
    assert entry is not None
    assert entry["annotations"] == {"org.example": "kept", ANNOTATION_REF_NAME: "r:1"}
    assert "annotations" not in descriptor


def test_make_layer_is_deterministic_with_parents(tmp_path: Path) -> None:
    files = {"/usr/bin/tool": (b"#!/bin/sh\n", 0o755), "etc/motd": (b"hi\n", 0o644)}
    first = make_layer(files)
    second = make_layer(dict(reversed(files.items())))
    assert first == second

    gzipped, diff_id = first
    raw = gzip.decompress(gzipped)
    assert diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert gzipped[4:8] == b"\0\0\0\0"  # gzip MTIME field
    assert not gzipped[3] & 0x08  # no FNAME flag

    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["etc", "etc/motd", "usr", "usr/bin", "usr/bin/tool"]
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
        assert [m.isdir() for m in members] == [True, False, True, True, False]
        tool = tar.extractfile("usr/bin/tool")
        assert tool is not None and tool.read() == b"#!/bin/sh\n"
        assert tar.getmember("usr/bin/tool").mode == 0o755
        assert tar.getmember("etc/motd").mode == 0o644


@pytest.mark.parametrize("bad", ["", "/", "../x", "a/../b"])
def test_make_layer_rejects_bad_paths(bad: str) -> None:
    with pytest.raises(ValueError):
        make_layer({bad: (b"", 0o644)})


def test_make_layer_rejects_conflicting_paths() -> None:
    with pytest.raises(ValueError, match="a file and a directory"):
        make_layer({"a": (b"", 0o644), "a/b": (b"", 0o644)})
    with pytest.raises(ValueError, match="a file and a directory"):
        make_layer({"a/b": (b"", 0o644), "a": (b"", 0o644)})
    with pytest.raises(ValueError, match="duplicate"):
        make_layer({"/a": (b"", 0o644), "a": (b"", 0o644)})


def test_image_and_index(tmp_path: Path) -> None:
    writer = LayoutWriter(tmp_path)
    layer = make_layer({"bin/hello": (b"\x7fELF...", 0o755)})
    descriptor = image(
        writer,
        layers=[layer],
        entrypoint=["/bin/hello"],
        os="linux",
        architecture="arm64",
        variant="v8",
        annotations={"org.example.note": "x"},
    )
    assert descriptor["mediaType"] == MEDIA_TYPE_IMAGE_MANIFEST
    assert descriptor["platform"] == {"architecture": "arm64", "os": "linux", "variant": "v8"}

    manifest = json.loads(read_blob(tmp_path, descriptor))
    assert manifest["schemaVersion"] == 2
    assert manifest["annotations"] == {"org.example.note": "x"}
    assert manifest["config"]["mediaType"] == MEDIA_TYPE_IMAGE_CONFIG
    assert [lay["mediaType"] for lay in manifest["layers"]] == [MEDIA_TYPE_LAYER_TAR_GZIP]
    assert read_blob(tmp_path, manifest["layers"][0]) == layer[0]
    config = json.loads(read_blob(tmp_path, manifest["config"]))
    assert config["config"]["Entrypoint"] == ["/bin/hello"]
    assert (config["os"], config["architecture"], config["variant"]) == ("linux", "arm64", "v8")
    assert config["rootfs"]["diff_ids"] == [layer[1]]

    index_descriptor = image_index(writer, [descriptor])
    assert index_descriptor["mediaType"] == MEDIA_TYPE_IMAGE_INDEX
    index = json.loads(read_blob(tmp_path, index_descriptor))
    assert index["manifests"] == [descriptor]
    writer.tag("repo:latest", index_descriptor)
    writer.save()
    assert_layout_consistent(tmp_path)

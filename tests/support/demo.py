"""The demo's `qnib/bench` layout as tests use it: built once, and its entries by features."""

from __future__ import annotations

import json
from pathlib import Path

DEMO_IMAGE = "qnib/bench:latest"


def demo_entries(layout: Path) -> dict[str, str]:
    """Digest of each entry of qnib/bench:latest, by its features ('' for generic, 'arm64')."""
    refs = {
        d["annotations"]["org.opencontainers.image.ref.name"]: d
        for d in json.loads((layout / "index.json").read_bytes())["manifests"]
    }
    digest = refs[DEMO_IMAGE]["digest"].removeprefix("sha256:")
    index = json.loads((layout / "blobs" / "sha256" / digest).read_bytes())
    found = {}
    for entry in index["manifests"]:
        platform = entry["platform"]
        key = ",".join(platform.get("features", []))
        found["arm64" if platform["architecture"] == "arm64" else key] = entry["digest"]
    assert set(found) == {"cpu:broadwell", "cpu:skylake", "", "cpu:broadwell,nvcap:5.2", "arm64"}
    return found

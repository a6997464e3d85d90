"""The ManifestService over a real OCI layout on disk, with its digest store in a real SQLite.

The layout is written here with LayoutWriter: small JSON manifests and config blobs, indexes of
them, indexes of indexes. Expected bytes are read back from the layout's blob files and every
expected digest is hashed here with hashlib, never taken from the service's answers.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from metahub import errors
from metahub.auth.tokens import Principal
from metahub.config import parse_config
from metahub.hub import Hub
from metahub.oci.layout_writer import LayoutWriter
from metahub.serving.manifests import ServedManifest
from tests.support.oci import (
    AMD64,
    ARM64,
    ARM64_V8,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    REFERENCE_DIGEST,
    REFERENCE_TYPE,
    sha256,
)

MACHINE_TYPES = [
    {"name": "sky", "login": "sky", "password": "sky-password", "features": ["cpu:skylake"]},
    {
        "name": "arm-first",
        "login": "arm-first",
        "password": "arm-password",
        "features": ["cpu:neoverse_v1"],
        "platforms": ["linux/arm64", "linux/amd64"],
    },
    {"name": "drv", "login": "drv", "password": "drv-password", "features": ["driver:535.54"]},
    {"name": "zen", "login": "zen", "password": "zen-password", "features": ["cpu:zen3"]},
]
SKY = Principal("sky", "sky")
ARM_FIRST = Principal("arm-first", "arm-first")
DRV = Principal("drv", "drv")
ZEN = Principal("zen", "zen")
UNFILTERED = Principal("anonymous", None)


@dataclass
class Layout:
    path: Path
    blobs: dict[str, bytes] = field(default_factory=dict)  # label -> bytes as written
    descriptors: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> descriptor

    def digest(self, label: str) -> str:
        return sha256(self.blobs[label])

    def on_disk(self, digest: str) -> bytes:
        return (self.path / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def build_layout(path: Path) -> Layout:
    writer = LayoutWriter(path)
    layout = Layout(path)

    def put(label: str, data: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
        descriptor = {**writer.add_blob(data, media_type), **extra}
        layout.blobs[label] = data
        layout.descriptors[label] = descriptor
        return descriptor

    def image(label: str, platform: dict[str, str], *features: str) -> dict[str, Any]:
        config = writer.add_json({**platform, "config": {"Labels": {"x": label}}}, OCI_CONFIG)
        document = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config,
            "layers": [],
            "annotations": {"org.example.label": label},
        }
        descriptor_platform: dict[str, Any] = dict(platform)
        if features:
            descriptor_platform["features"] = list(features)
        data = json.dumps(document).encode()
        return put(label, data, OCI_MANIFEST, platform=descriptor_platform)

    def index(label: str, manifests: list[dict[str, Any]], **top: Any) -> dict[str, Any]:
        document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests, **top}
        return put(label, json.dumps(document).encode(), OCI_INDEX)

    def nested(descriptor: dict[str, Any], platform: dict[str, str] | None) -> dict[str, Any]:
        out = {k: v for k, v in descriptor.items() if k != "platform"}
        if platform is not None:
            out["platform"] = dict(platform)
        return out

    # Indexes of indexes: the parent holds no features; its children do.
    child_a = index(
        "child-a",
        [
            image("a-haswell", AMD64, "cpu:haswell"),
            image("a-skylake", AMD64, "cpu:skylake"),
            image("a-generic", AMD64),
        ],
    )
    child_b = index(
        "child-b", [image("b-n1", ARM64, "cpu:neoverse_n1"), image("b-generic", ARM64_V8)]
    )
    child_c = index("child-c", [image("c-zen2", AMD64, "cpu:zen2")])  # fits neither machine
    writer.tag(
        "svc/nested:latest",
        index(
            "nested",
            [nested(child_a, AMD64), nested(child_c, AMD64), nested(child_b, ARM64)],
            annotations={"org.example.parent": "yes"},
        ),
    )
    writer.tag("svc/nothing-nested:latest", index("nothing-nested", [nested(child_c, AMD64)]))
    # A parent with features whose best-looking entry is an index holding nothing that fits.
    writer.tag(
        "svc/nested-fallback:latest",
        index(
            "nested-fallback",
            [
                {**nested(child_c, None), "platform": {**AMD64, "features": ["cpu:x86_64_v3"]}},
                image("f-generic", AMD64),
                image("f-arm", ARM64),
            ],
        ),
    )

    # Three levels: parent -> middle (no features) -> leaf (features) -> images.
    leaf = index("leaf", [image("l-broadwell", AMD64, "cpu:broadwell"), image("l-generic", AMD64)])
    middle = index("middle", [nested(leaf, AMD64)])
    writer.tag("svc/deep:latest", index("deep", [nested(middle, AMD64)]))

    # buildx's shape: attestation manifests next to the images they describe.
    images = [
        image("t-haswell", AMD64, "cpu:haswell"),
        image("t-skylake", AMD64, "cpu:skylake"),
        image("t-arm", ARM64),
    ]
    attestations = []
    for target in ("t-haswell", "t-skylake", "t-arm"):
        document = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": writer.add_json({"of": target}, OCI_CONFIG),
            "layers": [],
        }
        attestations.append(
            put(
                f"att-{target}",
                json.dumps(document).encode(),
                OCI_MANIFEST,
                platform={"os": "unknown", "architecture": "unknown"},
                annotations={
                    REFERENCE_TYPE: "attestation-manifest",
                    REFERENCE_DIGEST: layout.descriptors[target]["digest"],
                },
            )
        )
    writer.tag("svc/attest:latest", index("attest", [*images, *attestations]))

    # Every optional field of an index, and annotations on the descriptors.
    subject = layout.descriptors["t-arm"]
    annotated_images = [
        {**image("n-skylake", AMD64, "cpu:skylake"), "annotations": {"org.example.k": "sky"}},
        {**image("n-zen2", AMD64, "cpu:zen2"), "annotations": {"org.example.k": "zen"}},
        {**image("n-arm", ARM64), "annotations": {"org.example.k": "arm"}},
    ]
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "application/vnd.example.bundle",
        "manifests": annotated_images,
        "subject": {k: subject[k] for k in ("mediaType", "digest", "size")},
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
        "org.example.extension": {"kept": True},
    }
    writer.tag("svc/annotated:latest", put("annotated", json.dumps(document).encode(), OCI_INDEX))

    # No features anywhere: served byte for byte, odd formatting included.
    plain_images = [image("p-amd", AMD64), image("p-arm", ARM64)]
    plain = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": plain_images}
    writer.tag(
        "svc/plain:latest", put("plain", json.dumps(plain, indent=3).encode() + b"\n", OCI_INDEX)
    )
    plain_child = put("plain-child", json.dumps(plain, indent=1).encode(), OCI_INDEX)
    writer.tag(
        "svc/plain-nested:latest",
        put(
            "plain-nested",
            json.dumps(
                {"mediaType": OCI_INDEX, "schemaVersion": 2, "manifests": [plain_child]},
                indent=2,
            ).encode(),
            OCI_INDEX,
        ),
    )

    writer.tag(
        "svc/amd-only:latest",
        index("amd-only", [image("o-haswell", AMD64, "cpu:haswell"), image("o-generic", AMD64)]),
    )
    writer.tag(
        "svc/driver:latest",
        index(
            "driver",
            [
                image("d-550", AMD64, "driver:550"),
                image("d-525", AMD64, "driver:525.60"),
                image("d-generic", AMD64),
            ],
        ),
    )
    writer.tag("svc/single:latest", image("single", AMD64))
    writer.save()
    return layout


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    return build_layout(tmp_path_factory.mktemp("service-layout"))


def settings_for(layout: Layout, data_dir: Path) -> Any:
    return parse_config(
        {
            "upstream": {"path": str(layout.path)},
            "data_dir": str(data_dir),
            "machine_types": MACHINE_TYPES,
            "features": {"matchers": {"driver": "at-least"}},
        }
    )


@pytest.fixture
async def hub(layout: Layout, tmp_path: Path) -> AsyncIterator[Hub]:
    started = await Hub.start(settings_for(layout, tmp_path / "data"))
    try:
        yield started
    finally:
        await started.close()


async def serve(
    hub: Hub, name: str, reference: str, principal: Principal, *, accepts_index: bool = True
) -> ServedManifest:
    """What a request authenticated as `principal` is served, resolved as the registry does."""
    profile = hub.profiles.for_principal(principal)
    return await hub.manifests.get(name, reference, profile, accepts_index=accepts_index)


def manifests_of(data: bytes) -> list[dict[str, Any]]:
    return list(json.loads(data)["manifests"])


def digests_of(data: bytes) -> list[str]:
    return [d["digest"] for d in manifests_of(data)]


# --- nested indexes ----------------------------------------------------------------------------


async def test_nested_parent_points_at_the_filtered_children(layout: Layout, hub: Hub) -> None:
    served = await serve(hub, "svc/nested", "latest", SKY)
    assert served.media_type == OCI_INDEX
    assert served.digest == sha256(served.data)
    parent = json.loads(served.data)
    assert parent["annotations"] == {"org.example.parent": "yes"}
    entries = parent["manifests"]
    # child C (zen2 only) fits nothing and is gone; A and B stay, in index order
    assert [e["platform"] for e in entries] == [AMD64, ARM64]
    expected_children = {
        0: [layout.digest("a-skylake")],
        1: [layout.digest("b-generic")],
    }
    for position, entry in enumerate(entries):
        assert entry["mediaType"] == OCI_INDEX
        assert entry["digest"] not in (layout.digest("child-a"), layout.digest("child-b"))
        child = await serve(hub, "svc/nested", entry["digest"], SKY)
        assert sha256(child.data) == entry["digest"] == child.digest
        assert entry["size"] == len(child.data)
        assert child.media_type == OCI_INDEX
        assert digests_of(child.data) == expected_children[position]


async def test_nested_choice_follows_each_machine_type(layout: Layout, hub: Hub) -> None:
    served = await serve(hub, "svc/nested", "latest", ARM_FIRST)
    children = []
    for entry in manifests_of(served.data):
        child = await serve(hub, "svc/nested", entry["digest"], ARM_FIRST)
        assert sha256(child.data) == entry["digest"]
        children.append(digests_of(child.data))
    assert children == [[layout.digest("a-generic")], [layout.digest("b-n1")]]


async def test_filtered_children_are_retrievable_after_a_restart(
    layout: Layout, tmp_path: Path
) -> None:
    settings = settings_for(layout, tmp_path / "persisted")
    first = await Hub.start(settings)
    try:
        served = await serve(first, "svc/nested", "latest", SKY)
    finally:
        await first.close()
    second = await Hub.start(settings)  # a fresh process's view: SQLite, no memory cache
    try:
        again = await serve(second, "svc/nested", served.digest, UNFILTERED)
        assert again.data == served.data
        for entry in manifests_of(served.data):
            child = await serve(second, "svc/nested", entry["digest"], UNFILTERED)
            assert sha256(child.data) == entry["digest"]
    finally:
        await second.close()


async def test_three_levels_resolve_recursively(layout: Layout, hub: Hub) -> None:
    served = await serve(hub, "svc/deep", "latest", SKY)
    (middle_entry,) = manifests_of(served.data)
    middle = await serve(hub, "svc/deep", middle_entry["digest"], SKY)
    assert sha256(middle.data) == middle_entry["digest"]
    (leaf_entry,) = manifests_of(middle.data)
    assert leaf_entry["digest"] != layout.digest("leaf")
    leaf = await serve(hub, "svc/deep", leaf_entry["digest"], SKY)
    assert sha256(leaf.data) == leaf_entry["digest"]
    assert digests_of(leaf.data) == [layout.digest("l-broadwell")]


async def test_nested_index_where_nothing_fits_is_dropped(hub: Hub) -> None:
    with pytest.raises(errors.ManifestUnknown) as info:
        await serve(hub, "svc/nothing-nested", "latest", SKY)
    assert info.value.status == 404
    assert json.loads(info.value.body())["errors"][0]["code"] == "MANIFEST_UNKNOWN"


async def test_nested_index_with_features_is_chosen_when_something_in_it_fits(
    layout: Layout, hub: Hub
) -> None:
    served = await serve(hub, "svc/nested-fallback", "latest", ZEN)
    first, arm = manifests_of(served.data)
    assert arm["digest"] == layout.digest("f-arm")
    assert first["mediaType"] == OCI_INDEX
    child = await serve(hub, "svc/nested-fallback", first["digest"], ZEN)
    assert sha256(child.data) == first["digest"]
    assert digests_of(child.data) == [layout.digest("c-zen2")]


async def test_nested_index_that_fits_nothing_falls_back_to_the_generic_entry(
    layout: Layout, hub: Hub
) -> None:
    """Nested indexes follow the same rules: an index where nothing fits is an entry that does
    not fit, so the platform's generic entry is served instead of leaving linux/amd64 empty."""
    served = await serve(hub, "svc/nested-fallback", "latest", SKY)
    assert digests_of(served.data) == [layout.digest("f-generic"), layout.digest("f-arm")]


async def test_filtering_stores_nothing_and_record_stores_every_index_made(hub: Hub) -> None:
    """Selection alone (what an explanation runs) leaves no trace; recording it stores the
    filtered index and the filtered children it points at."""
    profile = hub.profiles.named("sky")
    manifest = await hub.upstream.get_manifest("svc/nested", "latest")
    filtering = await hub.manifests.filtering("svc/nested", "latest", manifest, profile)
    assert filtering.served is not None
    made = [filtering.served] + [
        nested.served
        for nested in filtering.nested.values()
        if nested.served is not None and nested.filtered
    ]
    assert len(made) == 3  # the parent and the children of A and B; C fits nothing
    for served in made:
        assert await hub.manifests.store.get("svc/nested", served.digest) is None
    await hub.manifests.record("svc/nested", "latest", filtering, profile)
    for served in made:
        stored = await hub.manifests.store.get("svc/nested", served.digest)
        assert stored is not None
        assert (stored.content, stored.media_type) == (served.data, served.media_type)
        assert sha256(stored.content) == served.digest


# --- attestations, annotations -----------------------------------------------------------------


async def test_attestations_stay_with_their_image(layout: Layout, hub: Hub) -> None:
    served = await serve(hub, "svc/attest", "latest", SKY)
    assert digests_of(served.data) == [
        layout.digest(label) for label in ("t-skylake", "t-arm", "att-t-skylake", "att-t-arm")
    ]
    for entry in manifests_of(served.data):
        fetched = await serve(hub, "svc/attest", entry["digest"], SKY)
        assert fetched.data == layout.on_disk(entry["digest"])
    by_label = {layout.digest(k): v for k, v in layout.descriptors.items()}
    for entry in manifests_of(served.data):
        assert entry == by_label[entry["digest"]]  # descriptors kept whole, annotations too


async def test_index_fields_are_preserved(layout: Layout, hub: Hub) -> None:
    served = await serve(hub, "svc/annotated", "latest", SKY)
    original = json.loads(layout.blobs["annotated"])
    filtered = json.loads(served.data)
    assert {k: v for k, v in filtered.items() if k != "manifests"} == {
        k: v for k, v in original.items() if k != "manifests"
    }
    assert filtered["subject"]["digest"] == layout.digest("t-arm")
    assert filtered["artifactType"] == "application/vnd.example.bundle"
    assert filtered["manifests"] == [original["manifests"][0], original["manifests"][2]]


# --- clients that take no index ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "principal", "label"),
    [
        ("svc/attest", SKY, "t-skylake"),
        ("svc/attest", ARM_FIRST, "t-arm"),  # the first declared platform
        ("svc/nested", SKY, "a-skylake"),  # through the filtered child index
        ("svc/nested", ARM_FIRST, "b-n1"),
        ("svc/deep", SKY, "l-broadwell"),
        ("svc/plain", SKY, "p-amd"),
        ("svc/plain", UNFILTERED, "p-amd"),
        ("svc/attest", UNFILTERED, "t-haswell"),
        ("svc/single", SKY, "single"),
    ],
)
async def test_accept_fallback_serves_the_chosen_manifest(
    layout: Layout, hub: Hub, name: str, principal: Principal, label: str
) -> None:
    served = await serve(hub, name, "latest", principal, accepts_index=False)
    assert served.data == layout.blobs[label]
    assert served.digest == layout.digest(label)
    assert served.media_type == OCI_MANIFEST


async def test_accept_fallback_without_the_platform_is_manifest_unknown(hub: Hub) -> None:
    with pytest.raises(errors.ManifestUnknown) as info:
        await serve(hub, "svc/amd-only", "latest", ARM_FIRST, accepts_index=False)
    assert info.value.status == 404
    body = json.loads(info.value.body())["errors"][0]
    assert body["code"] == "MANIFEST_UNKNOWN"
    assert "linux/arm64" in body["message"]
    # with an index, the same machine type gets the amd64 entry it allows
    served = await serve(hub, "svc/amd-only", "latest", ARM_FIRST)
    assert len(manifests_of(served.data)) == 1


# --- by digest, pass-through, configured matchers ----------------------------------------------


async def test_by_digest_serves_exactly_the_upstream_bytes(layout: Layout, hub: Hub) -> None:
    for name, label in [
        ("svc/attest", "attest"),  # an index with features, asked for by digest: unfiltered
        ("svc/attest", "t-skylake"),
        ("svc/attest", "att-t-haswell"),
        ("svc/nested", "nested"),
        ("svc/nested", "child-a"),
    ]:
        digest = layout.digest(label)
        served = await serve(hub, name, digest, SKY)
        assert served.data == layout.blobs[label] == layout.on_disk(digest)
        assert served.digest == digest


async def test_by_digest_serves_exactly_the_stored_bytes(layout: Layout, hub: Hub) -> None:
    served = await serve(hub, "svc/attest", "latest", SKY)
    again = await serve(hub, "svc/attest", served.digest, ARM_FIRST)
    assert again.data == served.data
    assert again.media_type == OCI_INDEX
    # a filtered index belongs to its repository; another name does not reach it
    with pytest.raises(errors.ManifestUnknown):
        await serve(hub, "svc/plain", served.digest, SKY)


@pytest.mark.parametrize("name", ["svc/plain", "svc/plain-nested"])
@pytest.mark.parametrize("principal", [SKY, ARM_FIRST, UNFILTERED])
async def test_index_without_features_passes_through(
    layout: Layout, hub: Hub, name: str, principal: Principal
) -> None:
    served = await serve(hub, name, "latest", principal)
    label = name.removeprefix("svc/")
    assert served.data == layout.blobs[label]
    assert served.digest == layout.digest(label)


async def test_configured_at_least_matcher(layout: Layout, hub: Hub) -> None:
    served = await serve(hub, "svc/driver", "latest", DRV)
    assert digests_of(served.data) == [layout.digest("d-525")]


async def test_served_filtered_index_is_logged(
    layout: Layout, hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        served = await serve(hub, "svc/attest", "latest", SKY)
    lines = [r.getMessage() for r in caplog.records if layout.digest("attest") in r.getMessage()]
    assert lines, caplog.text
    line = lines[0]
    assert re.search(r"\bsky\b", line), line
    assert served.digest in line
    for digest in digests_of(served.data):
        assert digest in line

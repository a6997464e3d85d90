"""The index spec (manifest-tool's format) and the index built from it.

Members are served from an in-memory source holding real manifest and config bytes; expected
digests are computed here with hashlib over the bytes compared.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from metahub.config import ConfigError, parse_config
from metahub.images.index import IndexBuildError, build_index
from metahub.images.members import Fetched, MemberError, Resolved, Source, resolve_members
from metahub.images.spec import (
    ImageRef,
    ImageSpec,
    InvalidReference,
    SpecError,
    load_spec,
    parse_spec,
)
from tests.support.oci import DOCKER_LIST, OCI_INDEX, OCI_MANIFEST, sha256

CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"

SEED_SPEC = """\
image: docker.io/qnib/bench
manifests:
  -
    image: docker.io/qnib/plain-featuretest:cpu-skylake
    platform:
      architecture: amd64
      os: linux
      features:
        - cpu:skylake
  -
    image: docker.io/qnib/plain-featuretest:cpu-broadwell
    platform:
      architecture: amd64
      os: linux
      features:
        - cpu:broadwell
"""


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


class MemorySource:
    """A registry in a dict: (repository, tag or digest) -> manifest; digest -> blob."""

    description = "memory"

    def __init__(self) -> None:
        self.manifests: dict[tuple[str, str], Fetched] = {}
        self.blobs: dict[str, bytes] = {}

    def image(self, repository: str, tag: str, **config: Any) -> bytes:
        layer = f"layer of {repository}:{tag}".encode()
        config_bytes = json.dumps({**config, "rootfs": {"type": "layers"}}).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": descriptor(CONFIG_TYPE, config_bytes),
                "layers": [descriptor(LAYER_TYPE, layer)],
            }
        ).encode()
        self.blobs[sha256(config_bytes)] = config_bytes
        self.blobs[sha256(layer)] = layer
        self.put(repository, tag, manifest, OCI_MANIFEST)
        return manifest

    def put(self, repository: str, tag: str, data: bytes, media_type: str) -> None:
        fetched = Fetched(data, media_type, sha256(data))
        self.manifests[(repository, tag)] = fetched
        self.manifests[(repository, sha256(data))] = fetched

    async def manifest(self, repository: str, reference: str) -> Fetched:
        found = self.manifests.get((repository, reference))
        if found is None:
            raise MemberError(f"{repository}:{reference} is not here")
        return found

    async def blob(self, repository: str, digest: str, limit: int) -> bytes:
        return self.blobs[digest]


def resolve(spec: ImageSpec, source: MemorySource) -> list[Resolved]:
    def source_for(ref: ImageRef) -> tuple[Source, str]:
        return source, ref.repository

    return asyncio.run(resolve_members(spec, source_for))


def seed_source() -> tuple[MemorySource, bytes, bytes]:
    source = MemorySource()
    skylake = source.image(
        "qnib/plain-featuretest", "cpu-skylake", architecture="amd64", os="linux"
    )
    broadwell = source.image(
        "qnib/plain-featuretest", "cpu-broadwell", architecture="amd64", os="linux"
    )
    return source, skylake, broadwell


# -- the spec ---------------------------------------------------------------------------------


def test_the_seed_spec_parses_with_manifest_tool_keys(tmp_path: Path) -> None:
    path = tmp_path / "manifest.yml"
    path.write_text(SEED_SPEC)
    spec = load_spec(path)
    assert spec.ref == ImageRef("docker.io", "qnib/bench")
    assert spec.all_tags == ("latest",)
    assert [m.image for m in spec.manifests] == [
        "docker.io/qnib/plain-featuretest:cpu-skylake",
        "docker.io/qnib/plain-featuretest:cpu-broadwell",
    ]
    platform = spec.manifests[0].platform
    assert platform is not None
    assert (platform.architecture, platform.os, platform.features) == (
        "amd64",
        "linux",
        ("cpu:skylake",),
    )


def test_tags_add_to_the_image_tag_each_once() -> None:
    spec = parse_spec(
        {"image": "reg.example.org/a/b:v2", "tags": ["v2", "latest", "2024"], "manifests": [
            {"image": "reg.example.org/a/b:x"}
        ]}
    )  # fmt: skip
    assert spec.all_tags == ("v2", "latest", "2024")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"manifests": [{"image": "a/b"}]}, "image: Field required"),
        ({"image": "a/b", "manifests": []}, "manifests: name at least one member image"),
        ({"image": "a/b", "manifests": [{"image": "a/c", "platfrom": {}}]},
         "manifests.0.platfrom: unknown key"),
        ({"image": "a/b", "manifests": [{"image": "a/c", "platform": {"feature": ["x:y"]}}]},
         "manifests.0.platform.feature: unknown key"),
        ({"image": "a/b", "manifests": [{"image": "a/c"}, {"image": "a/d", "platform": {
            "features": ["cpu"]}}]},
         "manifests.1.platform.features: invalid feature 'cpu': expected key:value"),
        ({"image": "a/b", "manifests": [{"image": "a/c", "platform": {
            "features": ["cpu:x", "cpu:x"]}}]},
         "manifests.0.platform.features: a feature is listed twice"),
        ({"image": "a/b", "manifests": [{"image": "Qnib/Bench"}]},
         "manifests.0.image: 'Qnib/Bench': invalid repository name"),
        ({"image": "a/b@sha256:" + "0" * 64, "manifests": [{"image": "a/c"}]},
         "image: 'a/b@sha256:" + "0" * 64 + "': the index's image is pushed by tag"),
        ({"image": "a/b", "tags": ["-bad"], "manifests": [{"image": "a/c"}]},
         "tags: invalid tag '-bad'"),
        ({"image": "a/b", "manifests": [{"image": "a/c", "platform": {"os": ""}}]},
         "manifests.0.platform.os: cannot be empty"),
        ({"image": "a/b", "manifests": [{"image": "a/c"}], "annotation": {}},
         "annotation: unknown key"),
    ],
)  # fmt: skip
def test_errors_name_the_key(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(raw, source="spec.yaml")
    message = str(caught.value)
    assert message.startswith("invalid spec.yaml:")
    assert expected in message, message


def test_a_spec_file_that_is_not_a_mapping_or_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(SpecError, match="must be a mapping"):
        load_spec(path)
    path.write_text("image: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)
    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("text", "registry", "host", "repository", "remote", "reference"),
    [
        ("ubuntu", None, "docker.io", "ubuntu", "library/ubuntu", "latest"),
        ("docker.io/qnib/bench", "docker.io", "docker.io", "qnib/bench", "qnib/bench", "latest"),
        ("index.docker.io/busybox:1", "index.docker.io", "docker.io", "busybox",
         "library/busybox", "1"),
        ("localhost:5000/a/b:t", "localhost:5000", "localhost:5000", "a/b", "a/b", "t"),
        ("localhost/a", "localhost", "localhost", "a", "a", "latest"),
        ("127.0.0.1:5000/hpc/bench@sha256:" + "a" * 64, "127.0.0.1:5000", "127.0.0.1:5000",
         "hpc/bench", "hpc/bench", "sha256:" + "a" * 64),
        ("reg.example.org/x/y/z:v1.2", "reg.example.org", "reg.example.org", "x/y/z", "x/y/z",
         "v1.2"),
    ],
)  # fmt: skip
def test_image_references_are_read_as_docker_reads_them(
    text: str, registry: str | None, host: str, repository: str, remote: str, reference: str
) -> None:
    ref = ImageRef.parse(text)
    assert (ref.registry, ref.host, ref.repository) == (registry, host, repository)
    assert (ref.remote_repository, ref.reference) == (remote, reference)
    assert str(ref) == text


@pytest.mark.parametrize("text", ["", "a/b@sha256:12", "UPPER/case", "a/b:", "a//b"])
def test_bad_references_are_refused(text: str) -> None:
    with pytest.raises(InvalidReference):
        ImageRef.parse(text)


# -- the index --------------------------------------------------------------------------------


def test_the_seed_index_keeps_features_with_deterministic_bytes() -> None:
    source, skylake, broadwell = seed_source()
    spec = parse_spec(
        {
            **_seed_raw(),
            "annotations": {"z.last": "2", "a.first": "1"},
        }
    )
    index = build_index(spec, resolve(spec, source))
    expected = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            descriptor(OCI_MANIFEST, skylake, platform={
                "architecture": "amd64", "os": "linux", "features": ["cpu:skylake"]}),
            descriptor(OCI_MANIFEST, broadwell, platform={
                "architecture": "amd64", "os": "linux", "features": ["cpu:broadwell"]}),
        ],
        "annotations": {"a.first": "1", "z.last": "2"},
    }  # fmt: skip
    assert json.loads(index.data) == expected
    assert index.data == json.dumps(expected, separators=(",", ":")).encode()
    assert index.digest == sha256(index.data)
    assert index.media_type == OCI_INDEX
    again = build_index(spec, resolve(spec, source))
    assert again.data == index.data


def _seed_raw() -> dict[str, Any]:
    return {
        "image": "qnib/bench",
        "manifests": [
            {
                "image": "qnib/plain-featuretest:cpu-skylake",
                "platform": {"architecture": "amd64", "os": "linux", "features": ["cpu:skylake"]},
            },
            {
                "image": "qnib/plain-featuretest:cpu-broadwell",
                "platform": {"architecture": "amd64", "os": "linux", "features": ["cpu:broadwell"]},
            },
        ],
    }


def test_two_entries_of_one_image_differing_only_in_features_are_allowed() -> None:
    source, skylake, _ = seed_source()
    spec = parse_spec(
        {
            "image": "qnib/bench",
            "manifests": [
                {"image": "qnib/plain-featuretest:cpu-skylake",
                 "platform": {"features": ["cpu:skylake", "nvcap:5.2"]}},
                {"image": "qnib/plain-featuretest:cpu-skylake",
                 "platform": {"features": ["cpu:skylake"]}},
            ],
        }
    )  # fmt: skip
    index = json.loads(build_index(spec, resolve(spec, source)).data)
    assert [m["digest"] for m in index["manifests"]] == [sha256(skylake)] * 2
    assert [m["platform"]["features"] for m in index["manifests"]] == [
        ["cpu:skylake", "nvcap:5.2"],
        ["cpu:skylake"],
    ]


def test_entries_that_do_not_differ_at_all_are_refused_naming_both() -> None:
    source, _, _ = seed_source()
    raw = _seed_raw()
    raw["manifests"][1]["platform"]["features"] = ["cpu:skylake"]
    spec = parse_spec(raw)
    with pytest.raises(IndexBuildError) as caught:
        build_index(spec, resolve(spec, source))
    message = str(caught.value)
    assert "manifests.1 (qnib/plain-featuretest:cpu-broadwell)" in message
    assert "manifests.0 (qnib/plain-featuretest:cpu-skylake)" in message


def test_the_platform_comes_from_the_image_config_when_the_spec_leaves_it_out() -> None:
    source = MemorySource()
    manifest = source.image(
        "app/arm", "v1", architecture="arm64", os="linux", variant="v8", **{"os.version": "6.1"}
    )
    spec = parse_spec(
        {"image": "app/all", "manifests": [
            {"image": "app/arm:v1"},
            {"image": "app/arm:v1", "platform": {"features": ["cpu:neoverse_n1"]}},
            {"image": "app/arm:v1", "platform": {"architecture": "arm", "os": "linux",
                                                 "variant": "v7", "osfeatures": ["x"]}},
        ]}
    )  # fmt: skip
    entries = json.loads(build_index(spec, resolve(spec, source)).data)["manifests"]
    assert {e["digest"] for e in entries} == {sha256(manifest)}
    assert [e["platform"] for e in entries] == [
        {"architecture": "arm64", "os": "linux", "os.version": "6.1", "variant": "v8"},
        {
            "architecture": "arm64",
            "os": "linux",
            "os.version": "6.1",
            "variant": "v8",
            "features": ["cpu:neoverse_n1"],
        },
        # architecture and os given: the spec's platform alone, as manifest-tool does
        {"architecture": "arm", "os": "linux", "os.features": ["x"], "variant": "v7"},
    ]


def test_a_config_without_a_platform_needs_one_in_the_spec() -> None:
    source = MemorySource()
    source.image("app/odd", "v1")
    spec = parse_spec({"image": "app/x", "manifests": [{"image": "app/odd:v1"}]})
    with pytest.raises(MemberError, match=r"manifests\.0 \(app/odd:v1\).*platform\.os"):
        resolve(spec, source)


def _multiarch(source: MemorySource) -> tuple[bytes, bytes, bytes, bytes]:
    amd64 = source.image("app/multi", "amd64-only", architecture="amd64", os="linux")
    arm64 = source.image("app/multi", "arm64-only", architecture="arm64", os="linux")
    attestation = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
         "config": descriptor(CONFIG_TYPE, b"{}"), "layers": []}
    ).encode()  # fmt: skip
    source.blobs[sha256(b"{}")] = b"{}"
    source.put("app/multi", sha256(attestation), attestation, OCI_MANIFEST)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                descriptor(OCI_MANIFEST, amd64, platform={"architecture": "amd64", "os": "linux"}),
                descriptor(OCI_MANIFEST, arm64, platform={"architecture": "arm64", "os": "linux"}),
                descriptor(
                    OCI_MANIFEST,
                    attestation,
                    platform={"architecture": "unknown", "os": "unknown"},
                    annotations={
                        "vnd.docker.reference.type": "attestation-manifest",
                        "vnd.docker.reference.digest": sha256(amd64),
                    },
                ),
            ],
        }
    ).encode()
    source.put("app/multi", "v1", index, OCI_INDEX)
    return amd64, arm64, attestation, index


def test_a_member_index_is_expanded_and_the_spec_selects_and_adds_features() -> None:
    source = MemorySource()
    amd64, arm64, attestation, _ = _multiarch(source)
    spec = parse_spec(
        {"image": "app/tuned", "manifests": [
            {"image": "app/multi:v1", "platform": {"architecture": "amd64",
                                                   "features": ["cpu:skylake"]}},
            {"image": "app/multi:v1"},
        ]}
    )  # fmt: skip
    entries = resolve(spec, source)
    document = json.loads(build_index(spec, entries).data)
    got = [(m["digest"], m["platform"]) for m in document["manifests"]]
    unknown = {"architecture": "unknown", "os": "unknown"}
    assert got == [
        (sha256(amd64), {"architecture": "amd64", "os": "linux", "features": ["cpu:skylake"]}),
        (sha256(attestation), unknown),
        (sha256(amd64), {"architecture": "amd64", "os": "linux"}),
        (sha256(arm64), {"architecture": "arm64", "os": "linux"}),
        (sha256(attestation), unknown),
    ]
    # The attestation keeps its annotations; entries point at the exact child bytes.
    assert document["manifests"][1]["annotations"]["vnd.docker.reference.digest"] == sha256(amd64)
    assert entries[0].manifest == amd64 and entries[0].repository == "app/multi"


def test_a_member_index_without_the_wanted_platform_names_what_it_offers() -> None:
    source = MemorySource()
    _multiarch(source)
    spec = parse_spec(
        {"image": "app/x", "manifests": [
            {"image": "app/multi:v1", "platform": {"architecture": "s390x"}}]}
    )  # fmt: skip
    with pytest.raises(MemberError) as caught:
        resolve(spec, source)
    message = str(caught.value)
    assert "manifests.0 (app/multi:v1)" in message
    assert "architecture=s390x" in message and "linux/amd64, linux/arm64" in message


def test_docker_manifest_list_type_and_its_lack_of_annotations() -> None:
    source, _, _ = seed_source()
    spec = parse_spec(_seed_raw())
    index = build_index(spec, resolve(spec, source), "docker")
    assert json.loads(index.data)["mediaType"] == DOCKER_LIST == index.media_type
    assert index.digest == sha256(index.data)
    annotated = parse_spec({**_seed_raw(), "annotations": {"a": "b"}})
    with pytest.raises(IndexBuildError, match="annotations: a Docker manifest list"):
        build_index(annotated, resolve(annotated, source), "docker")


# -- the config's images: ---------------------------------------------------------------------


def _config(images: list[dict[str, Any]], upstream: dict[str, Any] | None = None) -> Any:
    return parse_config(
        {"upstream": upstream or {"url": "registry.example.org:5000"}, "images": images}
    )


def test_config_images_use_the_same_format() -> None:
    settings = _config([_seed_raw()])
    assert settings.images[0].ref.repository == "qnib/bench"
    same_host = {**_seed_raw(), "image": "registry.example.org:5000/qnib/bench"}
    assert _config([same_host]).images[0].ref.host == "registry.example.org:5000"
    hub = {**_seed_raw(), "image": "docker.io/qnib/bench"}
    assert _config([hub], {"url": "https://registry-1.docker.io"}).images


@pytest.mark.parametrize(
    ("images", "upstream", "expected"),
    [
        ([{"image": "a/b", "manifests": [{"image": "a/c", "platform": {"features": ["x"]}}]}],
         None, "images.0.manifests.0.platform.features: invalid feature 'x'"),
        ([{"image": "ghcr.io/a/b", "manifests": [{"image": "a/c"}]}], None,
         "images.0.image: 'ghcr.io/a/b' names registry ghcr.io; virtual images are made from "
         "the upstream (registry.example.org:5000)"),
        ([{"image": "a/b", "manifests": [{"image": "localhost:5000/a/c"}]}], {"path": "/l"},
         "images.0.manifests.0.image: 'localhost:5000/a/c' names registry localhost:5000, but "
         "the upstream is an OCI layout"),
        ([{"image": "a/b", "tags": ["v1"], "manifests": [{"image": "a/c"}]},
          {"image": "a/b:v1", "manifests": [{"image": "a/d"}]}], None,
         "images.1.image: a/b:v1 is already defined by images.0"),
        ([{"image": "a/b", "manifests": [{"image": "a/c"}]},
          {"image": "a/d", "manifests": [{"image": "a/b:latest"}]}], None,
         "images.1.manifests.0.image: a/b:latest is a virtual image"),
    ],
)  # fmt: skip
def test_config_image_errors_name_the_key(
    images: list[dict[str, Any]], upstream: dict[str, Any] | None, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(images, upstream)
    assert expected in str(caught.value), str(caught.value)

"""Image indexes: parsing upstream bytes and writing filtered ones that keep everything else."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import pytest

from metahub.oci.index import Index, InvalidIndex, digest_of
from metahub.oci.platform import PlatformKey
from tests.support.oci import AMD64, OCI_INDEX, OCI_MANIFEST, entry, make_index, sha
from tests.support.oci import attestation as attestation_of

AMD64_SKYLAKE = entry(
    "amd64-skylake",
    {"architecture": "amd64", "os": "linux", "features": ["cpu:skylake"]},
    annotations={"org.example.note": "fast"},
)
AMD64_GENERIC = entry("amd64", {"architecture": "amd64", "os": "linux"})
ARM64_V8 = entry("arm64", {"architecture": "arm64", "os": "linux", "variant": "v8"})
WINDOWS = entry(
    "windows",
    {"architecture": "amd64", "os": "windows", "os.version": "10.0.17763.1"},
)
NO_PLATFORM = entry("artifact", None, artifactType="application/example")

DOCUMENT: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": OCI_INDEX,
    "artifactType": "application/example+type",
    "manifests": [AMD64_SKYLAKE, AMD64_GENERIC, ARM64_V8, WINDOWS, NO_PLATFORM],
    "subject": {"mediaType": OCI_MANIFEST, "digest": sha("subject"), "size": 10},
    "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    "x-extension": {"z": 1, "a": [1, 2]},
}


def encode(document: Any) -> bytes:
    return json.dumps(document, indent=3).encode()


@pytest.fixture
def index() -> Index:
    return Index.parse(encode(DOCUMENT))


def test_parse_reads_entries(index: Index) -> None:
    assert index.media_type == OCI_INDEX
    assert [e.position for e in index.entries] == [0, 1, 2, 3, 4]
    assert [e.digest for e in index.entries] == [
        sha("amd64-skylake"),
        sha("amd64"),
        sha("arm64"),
        sha("windows"),
        sha("artifact"),
    ]
    assert all(e.media_type == OCI_MANIFEST for e in index.entries)
    assert [e.descriptor for e in index.entries] == DOCUMENT["manifests"]


def test_parse_reads_platforms(index: Index) -> None:
    assert [e.platform for e in index.entries] == [
        PlatformKey("linux", "amd64"),
        PlatformKey("linux", "amd64"),
        PlatformKey("linux", "arm64", "v8"),
        PlatformKey("windows", "amd64", "", "10.0.17763.1"),
        None,
    ]
    assert [e.features for e in index.entries] == [("cpu:skylake",), (), (), (), ()]


def test_entries_of_one_platform_share_a_key(index: Index) -> None:
    first, second = index.entries[0], index.entries[1]
    assert first.platform == second.platform
    assert hash(first.platform) == hash(second.platform)
    assert index.entries[2].platform != first.platform


def test_annotations(index: Index) -> None:
    assert index.entries[0].annotations == {"org.example.note": "fast"}
    assert index.entries[1].annotations == {}


def test_non_object_annotations_read_as_none() -> None:
    document = {"manifests": [entry("x", None, annotations=["not", "a", "map"])]}
    assert Index.parse(encode(document)).entries[0].annotations == {}


def test_missing_fields_read_as_empty() -> None:
    entry = Index.parse(b'{"manifests": [{"platform": {}}]}').entries[0]
    assert entry.digest == ""
    assert entry.media_type == ""
    assert entry.platform == PlatformKey("", "")
    assert Index.parse(b'{"manifests": []}').media_type == ""


def test_null_features_read_as_none() -> None:
    document = {"manifests": [entry("x", {"os": "linux", "architecture": "amd64"})]}
    document["manifests"][0]["platform"]["features"] = None
    assert Index.parse(encode(document)).entries[0].features == ()


@pytest.mark.parametrize(
    ("key", "text"),
    [
        (PlatformKey("linux", "amd64"), "linux/amd64"),
        (PlatformKey("linux", "arm64", "v8"), "linux/arm64/v8"),
        (PlatformKey("windows", "amd64", "", "10.0.17763.1"), "windows/amd64 (10.0.17763.1)"),
        (PlatformKey("windows", "arm", "v7", "10.0"), "windows/arm/v7 (10.0)"),
    ],
)
def test_platform_key_str(key: PlatformKey, text: str) -> None:
    assert str(key) == text


def test_has_features(index: Index) -> None:
    assert index.has_features()
    plain = {"manifests": [AMD64_GENERIC, ARM64_V8]}
    assert not Index.parse(encode(plain)).has_features()
    assert not Index.parse(b'{"manifests": []}').has_features()


def test_with_entries_keeps_top_level_fields_and_order(index: Index) -> None:
    out = json.loads(index.with_entries([index.entries[1], index.entries[2]]))
    assert list(out) == list(DOCUMENT)
    for key in ("schemaVersion", "mediaType", "artifactType", "subject", "annotations"):
        assert out[key] == DOCUMENT[key]
    assert out["x-extension"] == {"z": 1, "a": [1, 2]}
    assert list(out["x-extension"]) == ["z", "a"]
    assert out["manifests"] == [AMD64_GENERIC, ARM64_V8]


def test_with_entries_keeps_descriptors_whole(index: Index) -> None:
    out = json.loads(index.with_entries([index.entries[0], index.entries[4]]))
    assert out["manifests"] == [AMD64_SKYLAKE, NO_PLATFORM]
    assert list(out["manifests"][0]) == list(AMD64_SKYLAKE)


def test_with_entries_uses_index_order(index: Index) -> None:
    kept = [index.entries[3], index.entries[0], index.entries[2]]
    out = json.loads(index.with_entries(kept))
    assert out["manifests"] == [AMD64_SKYLAKE, ARM64_V8, WINDOWS]


def test_with_entries_is_deterministic(index: Index) -> None:
    kept = [index.entries[2], index.entries[0]]
    first = index.with_entries(kept)
    again = Index.parse(encode(DOCUMENT)).with_entries(list(reversed(kept)))
    assert first == again
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(again).hexdigest()


def test_with_entries_output_parses_back(index: Index) -> None:
    out = index.with_entries([index.entries[0], index.entries[2]])
    reparsed = Index.parse(out)
    assert [e.descriptor for e in reparsed.entries] == [AMD64_SKYLAKE, ARM64_V8]
    assert [e.platform for e in reparsed.entries] == [
        PlatformKey("linux", "amd64"),
        PlatformKey("linux", "arm64", "v8"),
    ]
    assert reparsed.entries[0].features == ("cpu:skylake",)


def test_with_no_entries(index: Index) -> None:
    assert json.loads(index.with_entries([]))["manifests"] == []


def test_with_entries_does_not_change_the_index(index: Index) -> None:
    index.with_entries([index.entries[0]])
    assert index.document["manifests"] == DOCUMENT["manifests"]
    assert len(index.entries) == 5


def _platform_features(value: Any) -> bytes:
    platform = {"architecture": "amd64", "os": "linux", "features": value}
    return encode({"manifests": [entry("x", platform)]})


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="not-json"),
        pytest.param(b'{"manifests": [', id="truncated"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"[]", id="array"),
        pytest.param(b'"index"', id="string"),
        pytest.param(b"null", id="null"),
        pytest.param(b"2", id="number"),
        pytest.param(b"{}", id="no-manifests"),
        pytest.param(b'{"manifests": null}', id="null-manifests"),
        pytest.param(b'{"manifests": {}}', id="object-manifests"),
        pytest.param(b'{"manifests": "x"}', id="string-manifests"),
        pytest.param(b'{"manifests": ["sha256:abc"]}', id="string-entry"),
        pytest.param(b'{"manifests": [null]}', id="null-entry"),
        pytest.param(_platform_features("cpu:skylake"), id="string-features"),
        pytest.param(_platform_features({"cpu": "skylake"}), id="object-features"),
        pytest.param(_platform_features(["cpu:skylake", 3]), id="non-string-feature"),
        pytest.param(_platform_features([["cpu:skylake"]]), id="nested-features"),
        pytest.param(_platform_features(True), id="bool-features"),
        pytest.param(
            encode(
                {
                    "manifests": [
                        entry("a", AMD64, "cpu:skylake"),
                        entry("b", {**AMD64, "features": ["cpu:skylake", 3]}),
                    ]
                }
            ),
            id="a-checked-set-then-a-bad-one",
        ),
    ],
)
def test_parse_rejects(data: bytes) -> None:
    with pytest.raises(InvalidIndex):
        Index.parse(data)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({}, id="empty-object"),
        pytest.param("", id="empty-string"),
        pytest.param(0, id="zero"),
        pytest.param(False, id="false"),
    ],
)
def test_parse_rejects_falsy_non_list_features(value: Any) -> None:
    """`platform.features` is an array of strings; a falsy non-list is as malformed as any."""
    with pytest.raises(InvalidIndex):
        Index.parse(_platform_features(value))


def test_parse_error_names_the_entry() -> None:
    document = {"manifests": [AMD64_GENERIC, AMD64_GENERIC, 5]}
    with pytest.raises(InvalidIndex, match="2"):
        Index.parse(encode(document))


def test_invalid_index_is_a_value_error() -> None:
    assert issubclass(InvalidIndex, ValueError)


@pytest.mark.parametrize("data", [b"", b"{}", encode(DOCUMENT)])
def test_digest_of(data: bytes) -> None:
    assert digest_of(data) == "sha256:" + hashlib.sha256(data).hexdigest()


def test_an_index_too_deep_to_write_back_is_refused_where_it_would_be_rewritten() -> None:
    # orjson reads JSON 1,024 levels deep and writes at most 254: a document it reads but
    # cannot write back parses, and is refused only when filtering would make new bytes.
    deep = b"[" * 300 + b"]" * 300
    data = b'{"manifests":[{"digest":"sha256:' + b"a" * 64 + b'","x":' + deep + b"}]}"
    index = Index.parse(data)
    assert len(index.entries) == 1
    with pytest.raises(InvalidIndex, match="too deeply"):
        index.with_entries(index.entries)
    assert index.with_entries(()) == b'{"manifests":[]}'


@pytest.mark.parametrize(
    ("annotations", "attestation"),
    [
        ({"vnd.docker.reference.type": "attestation-manifest"}, True),
        (
            {
                "vnd.docker.reference.type": "attestation-manifest",
                "vnd.docker.reference.digest": sha("image"),
            },
            True,
        ),
        ({"vnd.docker.reference.type": "something-else"}, False),
        ({"vnd.docker.reference.digest": sha("image")}, False),
        ({"org.example.note": "attestation-manifest"}, False),
        (["vnd.docker.reference.type"], False),
        (None, False),
    ],
)
def test_an_entry_is_an_attestation_by_docker_s_reference_type(
    annotations: Any, attestation: bool
) -> None:
    unknown = {"architecture": "unknown", "os": "unknown"}
    described = entry("described", unknown)
    bare = entry("bare", None)
    for descriptor in (described, bare):  # with a platform and without
        if annotations is not None:
            descriptor["annotations"] = annotations
    document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [described, bare]}
    parsed = Index.parse(encode(document))
    assert [e.attestation for e in parsed.entries] == [attestation, attestation]


def test_entries_of_one_kind_share_it_across_indexes_and_others_do_not() -> None:
    """Selection remembers what it made of an entry by its kind, found by identity: equal
    platform, features and attestation must give the very same kind, anything else another."""
    amd64_v3 = {"architecture": "amd64", "os": "linux", "variant": "v3"}
    first = make_index(
        entry("a", AMD64, "cpu:zen3"),
        entry("b", AMD64, "cpu:zen3"),
        entry("c", AMD64, "cpu:zen2"),
        entry("d", amd64_v3, "cpu:zen3"),
        entry("e", None),
        attestation_of("f", of="a"),
    ).entries
    again = make_index(entry("x", AMD64, "cpu:zen3"), attestation_of("y", of="x")).entries

    assert first[0].kind is first[1].kind is again[0].kind
    assert first[5].kind is again[1].kind
    kinds = [e.kind for e in first[1:]]
    assert len({id(kind) for kind in kinds}) == len(kinds)  # all different
    # An entry served under another platform is of that platform's kind.
    served = dataclasses.replace(first[3], platform=first[0].platform)
    assert served.kind is first[0].kind

"""Whatever index bytes an upstream serves for a tag, a pull gets a manifest or a RegistryError.

A real ManifestService (its filtered-digest store in a real SQLite) reads from an in-memory
upstream holding generated documents: hostile index text, valid-looking indexes with features,
and indexes whose entries point at nested indexes the upstream also holds. Each is pulled by
machine types in `best` and `exact` mode, with and without declared platforms, and unfiltered,
by clients that take an index and clients that do not.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from metahub import errors
from metahub.features.selection import MachineProfile, Matchers, NoMatchingEntry, select
from metahub.oci.index import Index, InvalidIndex
from metahub.serving.manifests import ManifestService, ServedManifest
from metahub.store.database import open_database
from metahub.store.digests import FilteredDigestStore
from metahub.upstream.base import BlobStream, ByteRange, Manifest, ManifestHead, Referrers
from tests.support.fuzz import HEX64, hostile_text, json_text

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REPOSITORY = "fuzz/app"
TAG = "latest"

MATCHERS = Matchers({"driver": "at-least"}, {"cpu": {"corp-gen3": "icelake"}})
PROFILES: list[MachineProfile | None] = [
    None,  # unfiltered
    MachineProfile.of("sky", ["cpu:skylake", "nvcap:8.6"]),
    MachineProfile.of("drv", ["driver:535.54"], platforms=["linux/arm64", "linux/amd64/v3"]),
    MachineProfile.of("exact", ["cpu:zen3"], mode="exact"),
]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class MemoryUpstream:
    """Serves the documents it holds by tag and by digest; anything else is unknown."""

    description = "the in-memory upstream"

    def __init__(self) -> None:
        self.manifests: dict[str, Manifest] = {}

    def hold(self, data: bytes, media_type: str, tag: str | None = None) -> str:
        digest = sha256(data)
        self.manifests[digest] = Manifest(data, media_type, digest)
        if tag is not None:
            self.manifests[tag] = self.manifests[digest]
        return digest

    async def get_manifest(self, name: str, reference: str) -> Manifest:
        manifest = self.manifests.get(reference)
        if manifest is None:
            raise errors.ManifestUnknown(f"{name}:{reference} is not in {self.description}")
        return manifest

    async def head_manifest(self, name: str, reference: str) -> ManifestHead | None:
        return None

    async def open_blob(
        self,
        name: str,
        digest: str,
        byte_range: ByteRange | None = None,
        *,
        pass_redirect: bool = False,
    ) -> BlobStream:
        raise errors.BlobUnknown(f"{digest} is not in {self.description}")

    async def blob_size(self, name: str, digest: str) -> tuple[int, str]:
        raise errors.BlobUnknown(f"{digest} is not in {self.description}")

    async def tags(self, name: str) -> list[str]:
        return []

    async def referrers(self, name: str, digest: str, artifact_type: str | None) -> Referrers:
        raise errors.Unsupported("no referrers here")

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


# -- generated upstream documents ------------------------------------------------------------------

# Hostile text an upstream can send: lone surrogates are not UTF-8, and make any index invalid.
TEXT = hostile_text(4).map(lambda text: text.encode("utf-8", "replace").decode())
FEATURES = st.lists(
    st.one_of(
        st.sampled_from(["cpu:skylake", "cpu:haswell", "nvcap:8.0", "driver:535"]),
        st.sampled_from(["cpu:skylake", "cpu:haswell", "nvcap:8.0", "driver:535"]),
        st.sampled_from(
            ["cpu:skylake", "cpu:haswell", "cpu:zen3", "cpu:corp-gen3", "nvcap:8.0", "nvcap:9.0a",
             "nvptx:7.0", "driver:535", "driver:" + "1." * 40 + "1", "nvcap:" + "9" * 5000 + ".0",
             "cpu:", ":", "cpu: x"]
        ),
        TEXT,
    ),
    max_size=3,
)  # fmt: skip
PLATFORMS = st.sampled_from(
    [
        {"os": "linux", "architecture": "amd64"},
        {"os": "linux", "architecture": "amd64", "variant": "v3"},
        {"os": "linux", "architecture": "arm64", "variant": "v8"},
        {"os": "linux", "architecture": "arm64"},
        {"os": "unknown", "architecture": "unknown"},
        {"os": ["linux"], "architecture": None, "variant": 3, "os.version": {}},
    ]
)
IMAGE = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()
IMAGE_DIGEST = sha256(IMAGE)
ATTESTATION = {
    "vnd.docker.reference.type": "attestation-manifest",
    "vnd.docker.reference.digest": "sha256:" + HEX64,
}
ODD_VALUES = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
    st.just([]),
    st.just({}),
)


def descriptors(children: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """An index entry: an image, a nested index the upstream holds, or one it does not."""
    media_type = st.one_of(st.sampled_from([OCI_MANIFEST, OCI_INDEX, DOCKER_LIST]), ODD_VALUES)
    digest = st.one_of(
        st.sampled_from(children or ["sha256:" + HEX64]),
        st.just("sha256:" + HEX64),
        st.sampled_from(["", "latest", TAG, "sha256:", "sha256:zz", "md5:00"]),
        ODD_VALUES,
    )
    annotations = st.one_of(st.just(ATTESTATION), st.dictionaries(TEXT, ODD_VALUES))
    hostile = st.fixed_dictionaries(
        {"mediaType": media_type, "digest": digest},
        optional={
            "platform": st.one_of(platforms(), ODD_VALUES),
            "annotations": annotations,
            "size": ODD_VALUES,
        },
    )
    image = st.fixed_dictionaries(
        {"mediaType": st.just(OCI_MANIFEST), "digest": st.just(IMAGE_DIGEST),
         "size": st.just(500), "platform": platforms()},
    )  # fmt: skip
    nested = st.fixed_dictionaries(
        {"mediaType": st.just(OCI_INDEX), "digest": st.sampled_from(children),
         "platform": platforms()},
    ) if children else image  # fmt: skip
    return st.one_of(image, image, nested, hostile)


def platforms() -> st.SearchStrategy[dict[str, Any]]:
    return PLATFORMS.flatmap(lambda p: FEATURES.map(lambda f: {**p, "features": f} if f else p))


def index_documents(children: list[str]) -> st.SearchStrategy[bytes]:
    """Index-shaped JSON whose entries may be of any shape."""
    return st.fixed_dictionaries(
        {"manifests": st.lists(descriptors(children), min_size=1, max_size=6)},
        optional={
            "mediaType": st.sampled_from([OCI_INDEX, DOCKER_LIST]),
            "schemaVersion": ODD_VALUES,
        },
    ).map(lambda d: json.dumps(d).encode())


def index_bytes(children: list[str]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        index_documents(children),
        json_text(["manifests", "platform", "features", "digest", "mediaType"]).map(str.encode),
        st.binary(max_size=64),
    )


@st.composite
def upstreams(draw: st.DrawFn) -> tuple[MemoryUpstream, str]:
    """An upstream holding nested indexes, and a tagged index over them; returns its media type."""
    upstream = MemoryUpstream()
    upstream.hold(IMAGE, OCI_MANIFEST)
    children: list[str] = []
    for _ in range(draw(st.integers(0, 2))):
        data = draw(st.one_of(index_documents(children), index_bytes(children)))
        children.append(upstream.hold(data, draw(st.sampled_from([OCI_INDEX, DOCKER_LIST]))))
    media_type = draw(st.sampled_from([OCI_INDEX, OCI_INDEX, DOCKER_LIST, OCI_MANIFEST]))
    # Mostly index-shaped, so that selection and nested indexes are reached.
    tagged = st.one_of(index_documents(children), index_documents(children), index_bytes(children))
    upstream.hold(draw(tagged), media_type, tag=TAG)
    return upstream, media_type


# -- the service -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    # The tests are synchronous (hypothesis drives them); each example runs in this loop.
    running = asyncio.new_event_loop()
    yield running
    running.close()


@pytest.fixture(scope="module")
def store(
    loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FilteredDigestStore]:
    path: Path = tmp_path_factory.mktemp("fuzz-store") / "metahub.db"
    engine = loop.run_until_complete(open_database(f"sqlite+aiosqlite:///{path}"))
    store = FilteredDigestStore(engine)
    yield store
    loop.run_until_complete(store.close())
    loop.run_until_complete(engine.dispose())


async def pull(
    service: ManifestService, profile: MachineProfile | None, accepts_index: bool
) -> ServedManifest | errors.RegistryError:
    try:
        return await service.get(REPOSITORY, TAG, profile, accepts_index=accepts_index)
    except errors.RegistryError as exc:
        return exc


def nested_upstream() -> tuple[MemoryUpstream, str]:
    """A tag over a nested index with features: filtered at both levels for `sky`."""
    upstream = MemoryUpstream()
    upstream.hold(IMAGE, OCI_MANIFEST)
    amd64 = {"os": "linux", "architecture": "amd64"}
    child = {
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": IMAGE_DIGEST, "size": len(IMAGE),
             "platform": {**amd64, "features": features}}
            for features in (["cpu:haswell"], ["cpu:skylake", "nvcap:8.0"], ["cpu:zen3"])
        ]
    }  # fmt: skip
    child_digest = upstream.hold(json.dumps(child).encode(), OCI_INDEX)
    parent = {"manifests": [{"mediaType": OCI_INDEX, "digest": child_digest, "platform": amd64}]}
    upstream.hold(json.dumps(parent).encode(), OCI_INDEX, tag=TAG)
    return upstream, OCI_INDEX


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(upstreams(), st.sampled_from(PROFILES), st.booleans())
@example((MemoryUpstream(), OCI_INDEX), None, False)  # an unknown tag
@example(nested_upstream(), PROFILES[1], True)
@example(nested_upstream(), PROFILES[1], False)
def test_any_upstream_index_is_served_or_refused_with_a_registry_error(
    loop: asyncio.AbstractEventLoop,
    store: FilteredDigestStore,
    upstream_and_type: tuple[MemoryUpstream, str],
    profile: MachineProfile | None,
    accepts_index: bool,
) -> None:
    upstream, _ = upstream_and_type
    service = ManifestService(upstream, store, MATCHERS)
    result = loop.run_until_complete(pull(service, profile, accepts_index))
    if isinstance(result, errors.RegistryError):
        event(f"refused: {result.code}")
        assert 400 <= result.status < 600 and result.message
        return
    assert isinstance(result.data, bytes)
    filtered = result.digest not in upstream.manifests
    event("served a filtered index" if filtered else "served the upstream's bytes")
    if filtered:  # a filtered index MetaHub made and stored
        assert result.digest == sha256(result.data)
        assert Index.parse(result.data).entries
        stored = loop.run_until_complete(service.get(REPOSITORY, result.digest, None))
        assert stored.data == result.data


def test_an_unreadable_index_for_a_client_without_index_support_is_an_upstream_error(
    loop: asyncio.AbstractEventLoop, store: FilteredDigestStore
) -> None:
    # Once an InvalidIndex (a 500): the unfiltered path read the index without the guard.
    upstream = MemoryUpstream()
    upstream.hold(b"not json", OCI_INDEX, tag=TAG)
    service = ManifestService(upstream, store, MATCHERS)
    result = loop.run_until_complete(pull(service, None, False))
    assert isinstance(result, errors.UpstreamError)
    assert "served an invalid index" in result.message


def test_an_index_too_deep_to_rewrite_is_an_upstream_error_when_it_would_be_filtered(
    loop: asyncio.AbstractEventLoop, store: FilteredDigestStore
) -> None:
    # Deeper JSON than orjson writes reads fine: the refusal comes where new bytes are made.
    upstream = MemoryUpstream()
    deep = "[" * 300 + "]" * 300
    entry = (
        f'{{"mediaType":"{OCI_MANIFEST}","digest":"{IMAGE_DIGEST}","size":{len(IMAGE)},'
        f'"platform":{{"os":"linux","architecture":"amd64","features":["cpu:skylake"]}},'
        f'"x":{deep}}}'
    )
    upstream.hold(IMAGE, OCI_MANIFEST)
    upstream.hold(f'{{"schemaVersion":2,"manifests":[{entry}]}}'.encode(), OCI_INDEX, tag=TAG)
    service = ManifestService(upstream, store, MATCHERS)
    result = loop.run_until_complete(pull(service, PROFILES[1], True))
    assert isinstance(result, errors.UpstreamError)
    assert result.status == 502
    assert "served an invalid index" in result.message and "too deeply" in result.message
    unfiltered = loop.run_until_complete(pull(service, None, True))
    assert not isinstance(unfiltered, errors.RegistryError)
    assert unfiltered.digest == sha256(upstream.manifests[TAG].data)


# -- selection over whatever parses (what the service calls) ---------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index_bytes([]), st.sampled_from(PROFILES[1:]))
def test_selection_over_any_index_keeps_entries_or_finds_none(
    data: bytes, profile: MachineProfile
) -> None:
    try:
        index = Index.parse(data)
    except InvalidIndex:
        return
    try:
        selection = select(index, profile, MATCHERS, choose=index.has_features())
    except NoMatchingEntry as exc:
        assert str(exc)
        return
    assert selection.kept and len(selection.verdicts) == len(index.entries)
    assert Index.parse(index.with_entries(selection.kept)).entries

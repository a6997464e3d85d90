"""MetaHub in front of OCI image layouts on disk (`upstream: {path: ...}`).

The upstream root holds the demo's one layout for many repositories (ref names such as
`qnib/bench:latest`); below it, `<root>/<name>/` holds layouts of one repository each whose ref
names are bare tags, as `skopeo copy ... oci:` writes them. Every expected byte and digest is read
from the layout's files and hashed here, never taken from MetaHub's answers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from metahub.oci.layout_writer import LayoutWriter, image, make_layer
from tests.support.metahub_server import MetaHubServer
from tests.support.oci import OCI_INDEX, OCI_MANIFEST, sha256

REF_NAME = "org.opencontainers.image.ref.name"
MACHINE_TYPES = [
    {"name": "type1", "login": "qnib-type1", "password": "pw1", "features": ["cpu:broadwell"]},
    {"name": "type2", "login": "qnib-type2", "password": "pw2", "features": ["cpu:skylake"]},
    {"name": "type3", "login": "qnib-type3", "password": "pw3", "features": ["cpu:coffeelake"]},
    {
        "name": "type4",
        "login": "qnib-type4",
        "password": "pw4",
        "features": ["cpu:broadwell", "nvcap:5.2"],
    },
]
PASSWORDS = {m["login"]: m["password"] for m in MACHINE_TYPES}
LOGIN = ("qnib-type1", "pw1")

BENCH = "qnib/bench"  # in the shared layout at the root
SOLO = "solo/app"  # a per-repository layout with bare tags
SOLO_TAGS = ["v2", "latest", "v10", "1.0", "Beta", "alpha", "v1"]  # deliberately unsorted
LIVE = "live/repo"  # gets a new tag while MetaHub runs
STILL = "still/repo"  # gets a new tag whose index.json keeps the old mtime
EMPTY = "empty/repo"  # a layout with no tags at all
BAD_BLOB = "bad/blob"  # a manifest file whose bytes no longer match its digest
BROKEN = {
    "broken/syntax": b'{"schemaVersion": 2, "manifests": [',
    "broken/empty-file": b"",
    "broken/not-an-object": b"[]",
    "broken/manifests-not-a-list": b'{"schemaVersion": 2, "manifests": "everything"}',
    "broken/entry-not-an-object": b'{"schemaVersion": 2, "manifests": [42]}',
}


# -- reading the layouts directly -------------------------------------------------------------


def blob_file(layout: Path, digest: str) -> Path:
    algorithm, hex_digest = digest.split(":", 1)
    return layout / "blobs" / algorithm / hex_digest


def read_blob(layout: Path, digest: str) -> bytes:
    data = blob_file(layout, digest).read_bytes()
    assert sha256(data) == digest, f"{layout} is damaged: the test cannot trust it"
    return data


def refs(layout: Path) -> dict[str, dict[str, Any]]:
    """ref name -> descriptor, straight from index.json."""
    index = json.loads((layout / "index.json").read_bytes())
    return {m["annotations"][REF_NAME]: m for m in index["manifests"]}


def bench_tags(root: Path) -> dict[str, dict[str, Any]]:
    return {
        ref.split(":", 1)[1]: descriptor
        for ref, descriptor in refs(root).items()
        if ref.startswith(f"{BENCH}:")
    }


def small_image(writer: LayoutWriter, text: str, size: int = 0) -> dict[str, Any]:
    # Incompressible filler so the layer is big enough for interesting byte ranges.
    filler = b"".join(hashlib.sha256(f"{text}{i}".encode()).digest() for i in range(size // 32))
    layer = make_layer({"hello.txt": (text.encode(), 0o644), "filler.bin": (filler, 0o644)})
    return image(writer, layers=[layer], entrypoint=["/hello"], os="linux", architecture="amd64")


def add_tag(layout: Path, tag: str, text: str) -> None:
    writer = LayoutWriter(layout)
    writer.tag(tag, small_image(writer, text))
    writer.save()


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("layout-upstream")


@pytest.fixture(scope="module")
def root(workdir: Path, demo_layout: Path) -> Path:
    root = workdir / "layouts"
    shutil.copytree(demo_layout, root)  # the layouts below are added to a copy
    writer = LayoutWriter(root / SOLO)
    descriptor = small_image(writer, "solo", size=300_000)
    for tag in SOLO_TAGS:
        writer.tag(tag, descriptor)
    writer.save()
    add_tag(root / LIVE, "first", "live first")
    add_tag(root / STILL, "first", "still first")
    LayoutWriter(root / EMPTY).save()
    add_tag(root / BAD_BLOB, "latest", "bad blob")
    manifest = blob_file(root / BAD_BLOB, refs(root / BAD_BLOB)["latest"]["digest"])
    manifest.write_bytes(manifest.read_bytes().replace(b'"schemaVersion":2', b'"schemaVersion":3'))
    for name, content in BROKEN.items():
        LayoutWriter(root / name)  # writes the oci-layout marker
        (root / name / "index.json").write_bytes(content)
    return root


@pytest.fixture(scope="module")
def broken_root(workdir: Path) -> Path:
    """A layout for many repositories whose own index.json is damaged."""
    path = workdir / "broken-root"
    LayoutWriter(path)
    (path / "index.json").write_bytes(b'{"schemaVersion": 2, "manifests": [{"digest": ')
    return path


def start_together(stack: contextlib.ExitStack, *servers: MetaHubServer) -> None:
    for server in servers:
        stack.callback(server.stop)
    with ThreadPoolExecutor(len(servers)) as pool:
        for future in [pool.submit(server.start) for server in servers]:
            future.result()


@pytest.fixture(scope="module")
def hubs(
    workdir: Path, root: Path, broken_root: Path
) -> Iterator[tuple[MetaHubServer, MetaHubServer]]:
    (workdir / "hub").mkdir()
    (workdir / "broken-hub").mkdir()
    hub = MetaHubServer(
        workdir / "hub", {"upstream": {"path": str(root)}, "machine_types": MACHINE_TYPES}
    )
    broken = MetaHubServer(
        workdir / "broken-hub",
        {"upstream": {"path": str(broken_root)}, "machine_types": MACHINE_TYPES},
    )
    with contextlib.ExitStack() as stack:
        start_together(stack, hub, broken)
        yield hub, broken


@pytest.fixture
def client(hubs: tuple[MetaHubServer, MetaHubServer]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hubs[0].url, auth=LOGIN, timeout=30) as http:
        yield http


def error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert len(body["errors"]) == 1
    return body["errors"][0]  # type: ignore[no-any-return]


def solo_layer(root: Path) -> tuple[str, bytes]:
    manifest = json.loads(read_blob(root / SOLO, refs(root / SOLO)["v1"]["digest"]))
    digest = manifest["layers"][0]["digest"]
    return digest, read_blob(root / SOLO, digest)


# -- tags -------------------------------------------------------------------------------------


def test_tags_of_the_shared_layout_are_its_ref_names_sorted(client: httpx.Client, root: Path):
    expected = sorted(bench_tags(root))
    assert len(expected) == 5
    response = client.get(f"/v2/{BENCH}/tags/list")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"name": BENCH, "tags": expected}


def test_tags_of_a_per_repository_layout_are_its_bare_tags_sorted(client: httpx.Client):
    assert sorted(SOLO_TAGS) != SOLO_TAGS
    response = client.get(f"/v2/{SOLO}/tags/list")
    assert response.status_code == 200
    assert response.json() == {"name": SOLO, "tags": sorted(SOLO_TAGS)}


def test_tags_list_paginates_with_n_last_and_link(client: httpx.Client):
    expected = sorted(SOLO_TAGS)
    seen: list[str] = []
    url: str | None = f"/v2/{SOLO}/tags/list?n=2"
    links: list[str] = []
    while url:
        page = client.get(url)
        assert page.status_code == 200
        tags = page.json()["tags"]
        assert 1 <= len(tags) <= 2
        seen += tags
        link = page.headers.get("link")
        if link:
            links.append(link)
            assert link == f'</v2/{SOLO}/tags/list?n=2&last={tags[-1]}>; rel="next"'
        url = link.split(";")[0].strip("<>") if link else None
    assert seen == expected
    assert len(links) == 3  # 7 tags in pages of 2: three pages point on, the fourth does not
    after = client.get(f"/v2/{SOLO}/tags/list", params={"last": expected[3]}).json()
    assert after["tags"] == expected[4:]
    exact = client.get(f"/v2/{SOLO}/tags/list", params={"n": str(len(expected))})
    assert exact.json()["tags"] == expected
    assert "link" not in exact.headers


# -- manifests --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "tag"),
    [(BENCH, "cpu-skylake"), (BENCH, "generic"), (BENCH, "cpu_broadwell-nvcap_52"), (SOLO, "v1")],
)
def test_manifest_by_tag_is_the_file_on_disk(client: httpx.Client, root: Path, name: str, tag: str):
    layout, ref = (root, f"{name}:{tag}") if name == BENCH else (root / name, tag)
    descriptor = refs(layout)[ref]
    on_disk = read_blob(layout, descriptor["digest"])
    response = client.get(f"/v2/{name}/manifests/{tag}")
    assert response.status_code == 200
    assert response.content == on_disk
    assert response.headers["docker-content-digest"] == sha256(on_disk)
    assert response.headers["content-type"] == descriptor["mediaType"] == OCI_MANIFEST
    assert response.headers["content-length"] == str(len(on_disk))


def test_manifests_by_digest_are_the_files_on_disk(client: httpx.Client, root: Path):
    latest = bench_tags(root)["latest"]
    digests = [
        latest["digest"],
        *(m["digest"] for m in json.loads(read_blob(root, latest["digest"]))["manifests"]),
    ]
    assert len(digests) == 6
    for digest in digests:
        on_disk = read_blob(root, digest)
        response = client.get(f"/v2/{BENCH}/manifests/{digest}")
        assert response.status_code == 200, digest
        # A pinned digest gets exactly those bytes, the index too: never a filtered one.
        assert response.content == on_disk
        assert response.headers["docker-content-digest"] == digest
        assert response.headers["content-type"] == json.loads(on_disk)["mediaType"]


SEED = {
    "qnib-type1": "cpu-broadwell",
    "qnib-type2": "cpu-skylake",
    "qnib-type3": "cpu-skylake",
    "qnib-type4": "cpu_broadwell-nvcap_52",
}


@pytest.mark.parametrize("login", sorted(SEED))
def test_each_machine_type_gets_the_build_for_it(client: httpx.Client, root: Path, login: str):
    tags = bench_tags(root)
    upstream = json.loads(read_blob(root, tags["latest"]["digest"]))
    response = client.get(f"/v2/{BENCH}/manifests/latest", auth=(login, PASSWORDS[login]))
    assert response.status_code == 200
    assert response.headers["content-type"] == OCI_INDEX
    digest = response.headers["docker-content-digest"]
    assert digest == sha256(response.content) != tags["latest"]["digest"]
    served = response.json()
    amd64 = [m for m in served["manifests"] if m["platform"]["architecture"] == "amd64"]
    assert [m["digest"] for m in amd64] == [tags[SEED[login]]["digest"]]
    # The kept entries are the layout's own descriptors, in the layout's order.
    kept = [m for m in upstream["manifests"] if m in served["manifests"]]
    assert served["manifests"] == kept
    assert [m["platform"]["architecture"] for m in kept] == ["amd64", "arm64"]
    by_digest = client.get(f"/v2/{BENCH}/manifests/{digest}", auth=(login, PASSWORDS[login]))
    assert by_digest.status_code == 200
    assert by_digest.content == response.content


@pytest.mark.parametrize(
    "path",
    [
        f"/v2/{BENCH}/manifests/latest",
        f"/v2/{BENCH}/manifests/cpu-skylake",
        f"/v2/{SOLO}/manifests/v10",
        "LAYER",
    ],
)
def test_head_answers_like_get(client: httpx.Client, root: Path, path: str):
    if path == "LAYER":
        path = f"/v2/{SOLO}/blobs/{solo_layer(root)[0]}"
    head = client.head(path)
    get = client.get(path)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    for header in ("docker-content-digest", "content-type", "content-length"):
        assert head.headers[header] == get.headers[header], header
    assert get.headers["content-length"] == str(len(get.content))
    assert get.headers["docker-content-digest"] == sha256(get.content)


# -- blobs --------------------------------------------------------------------------------------


def test_blob_get_and_head_serve_the_file(client: httpx.Client, root: Path):
    digest, data = solo_layer(root)
    assert len(data) > 250_000
    get = client.get(f"/v2/{SOLO}/blobs/{digest}")
    assert get.status_code == 200
    assert get.content == data
    assert get.headers["docker-content-digest"] == digest
    head = client.head(f"/v2/{SOLO}/blobs/{digest}")
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(data))
    assert head.headers["docker-content-digest"] == digest
    config = json.loads(read_blob(root / SOLO, refs(root / SOLO)["v1"]["digest"]))["config"]
    config_data = read_blob(root / SOLO, config["digest"])
    assert client.get(f"/v2/{SOLO}/blobs/{config['digest']}").content == config_data


def test_blob_of_the_shared_layout(client: httpx.Client, root: Path):
    manifest = json.loads(read_blob(root, bench_tags(root)["generic"]["digest"]))
    digest = manifest["layers"][0]["digest"]
    response = client.get(f"/v2/{BENCH}/blobs/{digest}")
    assert response.status_code == 200
    assert response.content == read_blob(root, digest)


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        ("bytes=0-99", 0, 100),
        ("bytes=1000-", 1000, None),
        ("bytes=-50", -50, None),
        ("bytes=10-10", 10, 11),
        ("bytes=262144-262145", 262144, 262146),  # across the server's read chunks
        ("bytes=5-99999999", 5, None),  # a last byte past the end stops at the end
        ("bytes=-99999999", 0, None),  # a suffix longer than the blob is all of it
    ],
)
def test_blob_ranges(client: httpx.Client, root: Path, header: str, start: int, stop: int | None):
    digest, data = solo_layer(root)
    expected = data[start:stop]
    first = start if start >= 0 else len(data) + start
    response = client.get(f"/v2/{SOLO}/blobs/{digest}", headers={"range": header})
    assert response.status_code == 206
    assert response.content == expected
    assert response.headers["content-range"] == (
        f"bytes {first}-{first + len(expected) - 1}/{len(data)}"
    )
    assert response.headers["content-length"] == str(len(expected))


@pytest.mark.parametrize("header", ["bytes={size}-", "bytes={size}-{bigger}", "bytes=-0"])
def test_unsatisfiable_range_is_416(client: httpx.Client, root: Path, header: str):
    digest, data = solo_layer(root)
    value = header.format(size=len(data), bigger=len(data) + 10)
    response = client.get(f"/v2/{SOLO}/blobs/{digest}", headers={"range": value})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(data)}"
    assert error(response)["code"] == "RANGE_INVALID"


# -- what is not there ------------------------------------------------------------------------

MISSING = "sha256:" + "0" * 64


@pytest.mark.parametrize(
    "path",
    [
        "/v2/no/such/tags/list",
        "/v2/no/such/manifests/latest",
        f"/v2/no/such/manifests/{MISSING}",
        "/v2/qnib/nothing/blobs/LAYER",
        "/v2/nothing/referrers/LAYER",
    ],
)
def test_unknown_repository_is_name_unknown(client: httpx.Client, root: Path, path: str):
    response = client.get(path.replace("LAYER", solo_layer(root)[0]))
    assert response.status_code == 404
    assert error(response)["code"] == "NAME_UNKNOWN"
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "path",
    [
        f"/v2/{BENCH}/manifests/nosuchtag",
        f"/v2/{SOLO}/manifests/nosuchtag",
        f"/v2/{BENCH}/manifests/{MISSING}",
        f"/v2/{SOLO}/manifests/{MISSING}",
    ],
)
def test_unknown_tag_or_digest_is_manifest_unknown(client: httpx.Client, path: str):
    response = client.get(path)
    assert response.status_code == 404
    assert error(response)["code"] == "MANIFEST_UNKNOWN"


@pytest.mark.parametrize("name", [BENCH, SOLO])
def test_unknown_blob_is_blob_unknown(client: httpx.Client, name: str):
    for method in ("GET", "HEAD"):
        response = client.request(method, f"/v2/{name}/blobs/{MISSING}")
        assert response.status_code == 404, method
    response = client.get(f"/v2/{name}/blobs/{MISSING}")
    assert error(response)["code"] == "BLOB_UNKNOWN"


def test_a_layout_without_tags_has_an_empty_tag_list_and_no_manifests(client: httpx.Client):
    tags = client.get(f"/v2/{EMPTY}/tags/list")
    assert tags.status_code == 200
    assert tags.json() == {"name": EMPTY, "tags": []}
    response = client.get(f"/v2/{EMPTY}/manifests/latest")
    assert response.status_code == 404, response.text
    assert error(response)["code"] == "MANIFEST_UNKNOWN"


@pytest.mark.parametrize("name", [BENCH, SOLO])
def test_referrers_are_an_empty_index(client: httpx.Client, root: Path, name: str):
    digest = (
        bench_tags(root)["latest"]["digest"] if name == BENCH else refs(root / SOLO)["v1"]["digest"]
    )
    response = client.get(f"/v2/{name}/referrers/{digest}")
    assert response.status_code == 200
    assert response.headers["content-type"] == OCI_INDEX
    assert response.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    filtered = client.get(
        f"/v2/{name}/referrers/{digest}", params={"artifactType": "application/spdx+json"}
    )
    assert filtered.status_code == 200
    assert filtered.json()["manifests"] == []
    assert filtered.headers["oci-filters-applied"] == "artifactType"


# -- damaged layouts ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BROKEN))
@pytest.mark.parametrize("what", ["tags/list", "manifests/latest"])
def test_a_damaged_index_json_is_a_502_naming_the_layout(
    client: httpx.Client, root: Path, name: str, what: str
):
    response = client.get(f"/v2/{name}/{what}")
    assert response.status_code == 502, response.text
    assert error(response)["code"] == "UPSTREAM_ERROR"
    assert str(root / name) in error(response)["message"]


def test_a_damaged_shared_index_json_is_a_502_naming_the_layout(
    hubs: tuple[MetaHubServer, MetaHubServer], broken_root: Path
):
    with httpx.Client(base_url=hubs[1].url, auth=LOGIN, timeout=30) as http:
        for path in (f"/v2/{BENCH}/tags/list", f"/v2/{BENCH}/manifests/latest"):
            response = http.get(path)
            assert response.status_code == 502, response.text
            assert error(response)["code"] == "UPSTREAM_ERROR"
            assert str(broken_root / "index.json") in error(response)["message"]


def test_a_manifest_file_that_does_not_match_its_digest_is_a_502(client: httpx.Client, root: Path):
    digest = refs(root / BAD_BLOB)["latest"]["digest"]
    assert sha256(blob_file(root / BAD_BLOB, digest).read_bytes()) != digest
    response = client.get(f"/v2/{BAD_BLOB}/manifests/latest")
    assert response.status_code == 502
    assert error(response)["code"] == "UPSTREAM_ERROR"
    assert str(root) in error(response)["message"]
    assert digest in error(response)["message"]


# -- a layout that changes while MetaHub serves it -------------------------------------------


def test_a_tag_added_while_serving_becomes_visible(client: httpx.Client, root: Path):
    layout = root / LIVE
    assert client.get(f"/v2/{LIVE}/tags/list").json()["tags"] == ["first"]
    assert client.get(f"/v2/{LIVE}/manifests/second").status_code == 404
    add_tag(layout, "second", "live second")
    assert client.get(f"/v2/{LIVE}/tags/list").json()["tags"] == ["first", "second"]
    on_disk = read_blob(layout, refs(layout)["second"]["digest"])
    response = client.get(f"/v2/{LIVE}/manifests/second")
    assert response.status_code == 200
    assert response.content == on_disk
    assert on_disk != read_blob(layout, refs(layout)["first"]["digest"])


def test_a_rewritten_index_json_is_seen_even_with_the_same_mtime(client: httpx.Client, root: Path):
    # Filesystems with coarse timestamps (1 s on some network and FAT mounts, a jiffy on older
    # kernels) give a quick rewrite the old mtime; the replaced file is still a new file.
    index_file = root / STILL / "index.json"
    assert client.get(f"/v2/{STILL}/tags/list").json()["tags"] == ["first"]
    before = index_file.stat()
    add_tag(root / STILL, "second", "still second")
    os.utime(index_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert index_file.stat().st_mtime_ns == before.st_mtime_ns
    assert index_file.stat().st_size != before.st_size
    assert client.get(f"/v2/{STILL}/tags/list").json()["tags"] == ["first", "second"]

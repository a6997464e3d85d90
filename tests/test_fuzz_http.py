"""No request to the registry API answers 500, whatever its path, method and headers.

The application as served (build_app: access log and metrics included) runs in-process over a
real OCI layout holding an index with features, with a machine type, an account that takes
profile logins, and anonymous pulls unfiltered. Requests carry hostile names, references,
Accept headers and credentials (Basic, Bearer, profile logins with the right password).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from metahub.config import parse_config
from metahub.oci.layout_writer import LayoutWriter
from metahub.server.app import build_app
from tests.support.fuzz import hostile_text

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
PASSWORD = "fuzz-password"


def build_layout(path: Path) -> None:
    writer = LayoutWriter(path)
    entries = []
    for features in (["cpu:haswell"], ["cpu:skylake"], []):
        config = writer.add_json({"architecture": "amd64", "os": "linux"}, OCI_CONFIG)
        image = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": []}
        descriptor = dict(writer.add_json(image, OCI_MANIFEST))
        descriptor["platform"] = {"os": "linux", "architecture": "amd64", "features": features}
        entries.append(descriptor)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    writer.tag("fuzz/app:latest", writer.add_json(index, OCI_INDEX))
    # What a hand-made layout may hold: once each a 500 (InvalidDigest; UnicodeEncodeError).
    amd64 = {"os": "linux", "architecture": "amd64"}
    nested = {"mediaType": OCI_INDEX, "digest": "sha256:zz", "size": 2, "platform": amd64}
    writer.tag("fuzz/nested:latest", writer.add_json({**index, "manifests": [nested]}, OCI_INDEX))
    odd = dict(writer.add_json(index, OCI_INDEX))
    odd["mediaType"] = "application/vnd.\u2603+json"
    writer.tag("fuzz/odd:latest", odd)
    writer.save()


class Served:
    """The app with its lifespan started, in an event loop of its own."""

    def __init__(self, app: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop
        self._events: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self._sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._task = asyncio.ensure_future(self.app(scope, self._events.get, self._sent.put))
        await self._events.put({"type": "lifespan.startup"})
        message = await self._sent.get()
        assert message["type"] == "lifespan.startup.complete", message

    async def stop(self) -> None:
        await self._events.put({"type": "lifespan.shutdown"})
        await self._sent.get()
        assert self._task is not None
        await self._task

    async def request(self, method: str, path: str, headers: dict[str, bytes]) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://metahub") as client:
            return await client.request(method, path, headers=headers)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("fuzz-http")
    build_layout(root / "layout")
    config = parse_config(
        {
            "upstream": {"path": str(root / "layout")},
            "data_dir": str(root / "data"),
            "machine_types": [
                {"name": "sky", "login": "sky", "password": PASSWORD, "features": ["cpu:skylake"]}
            ],
            "accounts": [{"login": "hpc", "password": PASSWORD, "profile_logins": True}],
            "anonymous": {"unfiltered": True},
            "login_limit": {"failures": 1000000},
            "log": {"access": "off"},
        }
    )
    loop = asyncio.new_event_loop()
    running = Served(build_app(config), loop)
    loop.run_until_complete(running.start())
    yield running
    loop.run_until_complete(running.stop())
    loop.close()


# Header values as a client can send them: latin-1, without CR, LF or NUL.
HEADER_TEXT = hostile_text(6).map(
    lambda text: "".join(c for c in text if c not in "\r\n\x00" and ord(c) < 256)
)
LOGINS = st.one_of(
    st.sampled_from(["sky", "hpc/cpu=zen3", "hpc/platform=linux/amd64/v99999999", "nobody"]),
    hostile_text(5).map(lambda login: "hpc/" + login),
    hostile_text(4),
)


def basic(login: str, password: str) -> bytes:
    secret = f"{login}:{password}".encode("utf-8", "surrogatepass")
    return b"Basic " + base64.b64encode(secret)


AUTHORIZATION = st.one_of(
    st.builds(basic, LOGINS, st.sampled_from([PASSWORD, "wrong"])),
    HEADER_TEXT.map(lambda text: ("Bearer " + text).encode("latin-1")),
    HEADER_TEXT.map(lambda text: text.encode("latin-1")),
)
# Known names and references half the time, so that authentication and serving are reached.
KNOWN_NAMES = st.sampled_from(["fuzz/app", "fuzz/nested", "fuzz/odd", "fuzz/other", "library/x"])
NAMES = st.one_of(KNOWN_NAMES, KNOWN_NAMES, hostile_text(6))
REFERENCES = st.one_of(st.sampled_from(["latest", "sha256:" + "0" * 64, "v1"]), hostile_text(6))
KINDS = st.sampled_from(["manifests", "blobs", "tags", "referrers", "blobs/uploads"])


def _path(name: str, kind: str, reference: str) -> str:
    if kind == "tags":
        reference = "list"
    raw = f"/v2/{name}/{kind}/{reference}"
    return quote(raw, safe="/:@", errors="surrogatepass")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["GET", "HEAD", "GET", "PUT", "DELETE", "POST"]),
    NAMES,
    KINDS,
    REFERENCES,
    st.fixed_dictionaries(
        {},
        optional={
            "accept": HEADER_TEXT.map(lambda text: text.encode("latin-1")),
            "authorization": AUTHORIZATION,
            "range": HEADER_TEXT.map(lambda text: ("bytes=" + text).encode("latin-1")),
        },
    ),
)
@example("GET", "fuzz/app", "manifests", "latest", {"accept": b"application/json"})
@example("GET", "fuzz/app", "manifests", "latest", {"authorization": basic("sky", PASSWORD)})
@example("GET", "fuzz/nested", "manifests", "latest", {"authorization": basic("sky", PASSWORD)})
@example("GET", "fuzz/odd", "manifests", "latest", {})
@example(
    "GET",
    "fuzz/app",
    "manifests",
    "latest",
    {"authorization": basic("hpc/platform=linux/amd64/v99999999", PASSWORD)},
)
def test_no_registry_request_answers_500(
    served: Served,
    method: str,
    name: str,
    kind: str,
    reference: str,
    headers: dict[str, bytes],
) -> None:
    response = served.loop.run_until_complete(
        served.request(method, _path(name, kind, reference), headers)
    )
    event(f"{method} {kind}: {response.status_code}")
    assert response.status_code != 500, response.text
    if response.status_code >= 400 and method != "HEAD":
        assert json.loads(response.content)["errors"][0]["code"]

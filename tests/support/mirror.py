"""Mirror mode's test setup: one MetaHub in front of several real docker-registry upstreams.

Three registries, each named as image references spell it, each on its own loopback
docker-registry:

- `docker.io`: the default upstream, holding `library/app:1.0`;
- `ghcr.io` (prefix `ghcr.io`), behind upstream credentials, holding `acme/app:1.0`;
- `registry.lab:5000` (prefix `lab`), holding `acme/app:1.0` too: the same repository name as
  on ghcr.io, with other builds.

Every index lists a generic amd64 build first and the build for machine type `node`
(`cpu:broadwell`) second, then one that fits no x86 host this old: a client that gets the
upstream's index instead of the filtered one runs the first entry and prints the wrong line.
Each build prints its registry and repository, so a mix-up between registries shows too.
docker.io also serves a virtual image, `vapp`, made of library/app's builds.
Expected digests are the ones the registries answered when the images were pushed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metahub.demo.images import FeatureImage, build_feature_images
from tests.support.metahub_server import MetaHubServer
from tests.support.push import Pusher
from tests.support.servers import RegistryServer, free_port

NODE = ("node", "node-secret")  # the machine type's login and password
NODE_FEATURES = ["cpu:broadwell"]
# A machine type limited to one registry's repositories (`repositories:` patterns).
GHCR_ONLY = ("ghcr-only", "ghcr-only-secret")
ADMIN_TOKEN = "mirror-admin-token"
GHCR_AUTH = ("ghcr-bot", "ghcr-secret")
TAG = "1.0"
# A registry whose upstream never answers: its errors must name it.
DOWN = "down.example"
# A virtual image on docker.io, its members library/app's builds (one-part names: library/).
VIRTUAL = "vapp"


@dataclass(frozen=True)
class Image:
    registry: str
    repository: str  # within the registry
    index: str  # the upstream index's digest
    generic: str  # the first amd64 entry's digest: what a client without MetaHub gets
    chosen: str  # the entry machine type `node` must get
    message: str  # what the chosen build prints
    generic_message: str


@dataclass
class Mirror:
    hub: MetaHubServer
    upstreams: dict[str, RegistryServer]  # registry name -> its docker-registry
    images: dict[str, Image] = field(default_factory=dict)  # registry name -> its image

    def upstream_config(self) -> list[dict[str, Any]]:
        return self.hub.config["upstreams"]  # type: ignore[no-any-return]


def _builds(registry: str, repository: str) -> tuple[FeatureImage, ...]:
    def build(tag: str, *features: str) -> FeatureImage:
        named = ",".join(features) or "generic"
        # Plain x86-64 code: whichever build a host gets, it runs.
        return FeatureImage(tag, "x86-64", features, f">> {registry}/{repository} {named}")

    return (
        build("generic"),
        build("broadwell", "cpu:broadwell"),
        build("icelake", "cpu:icelake"),
    )


def _publish(
    work: Path, server: RegistryServer, registry: str, repository: str, auth: Any = None
) -> Image:
    builds = _builds(registry, repository)
    layout = work / f"layout-{registry.replace(':', '_')}"
    build_feature_images(layout, repository, builds, index_tag=TAG)
    pusher = Pusher(server.url, auth)
    pushed = pusher.layout(layout, repository)
    pusher.close()
    return Image(
        registry,
        repository,
        index=pushed[TAG],
        generic=pushed["generic"],
        chosen=pushed["broadwell"],
        message=builds[1].message,
        generic_message=builds[0].message,
    )


@contextmanager
def mirror(work: Path) -> Iterator[Mirror]:
    with ExitStack() as stack:
        hub_server = stack.enter_context(RegistryServer(work / "docker.io"))
        ghcr = stack.enter_context(RegistryServer(work / "ghcr", htpasswd=dict([GHCR_AUTH])))
        lab = stack.enter_context(RegistryServer(work / "lab"))
        images = {
            "docker.io": _publish(work, hub_server, "docker.io", "library/app"),
            "ghcr.io": _publish(work, ghcr, "ghcr.io", "acme/app", GHCR_AUTH),
            "registry.lab:5000": _publish(work, lab, "registry.lab:5000", "acme/app"),
        }
        config = {
            "upstreams": [
                {"registry": "docker.io", "url": hub_server.url, "default": True},
                {
                    "registry": "ghcr.io",
                    "url": ghcr.url,
                    "username": GHCR_AUTH[0],
                    "password": GHCR_AUTH[1],
                },
                {"registry": "registry.lab:5000", "url": lab.url, "prefix": "lab"},
                {
                    "registry": DOWN,
                    "url": f"http://127.0.0.1:{free_port()}",  # nothing listens there
                    "retries": 0,
                    "connect_timeout": 1,
                },
            ],
            "machine_types": [
                {
                    "name": "node",
                    "login": NODE[0],
                    "password": NODE[1],
                    "features": NODE_FEATURES,
                },
                {
                    "name": "ghcr-only",
                    "login": GHCR_ONLY[0],
                    "password": GHCR_ONLY[1],
                    "features": NODE_FEATURES,
                    "repositories": ["ghcr.io/acme/**"],
                },
            ],
            "admin": {"tokens": [ADMIN_TOKEN]},
            # A virtual image, made from and served as part of the default upstream.
            "images": [
                {
                    "image": VIRTUAL,
                    "tags": [TAG],
                    "manifests": [
                        {"image": f"app:{tag}", "platform": {"features": [feature]}}
                        for tag, feature in (
                            ("icelake", "cpu:icelake"),
                            ("broadwell", "cpu:broadwell"),
                        )
                    ],
                }
            ],
        }
        (work / "hub").mkdir()
        hub = stack.enter_context(MetaHubServer(work / "hub", config))
        yield Mirror(
            hub,
            {"docker.io": hub_server, "ghcr.io": ghcr, "registry.lab:5000": lab},
            images,
        )

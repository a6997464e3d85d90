"""Router: a request's repository path and `ns` to its upstream, repository and key."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metahub import errors
from metahub.config import parse_config
from metahub.oci.reference import NAME_RE
from metahub.upstream.routing import ROUTES_REMEMBERED, Route, Router

HUB = {"registry": "docker.io", "url": "https://registry-1.docker.io", "default": True}
GHCR = {"registry": "ghcr.io", "url": "https://ghcr.io"}
LAB = {"registry": "registry.lab:5000", "url": "http://10.0.0.5:5000", "prefix": "lab"}
NVCR = {"registry": "nvcr.io", "url": "https://nvcr.io"}


def router(*entries: dict[str, Any]) -> Router:
    return Router(parse_config({"upstreams": list(entries)}).configured_upstreams)


def legacy(**upstream: Any) -> Router:
    return Router(parse_config({"upstream": upstream}).configured_upstreams)


MIRROR = router(HUB, GHCR, LAB)


def where(route: Route) -> tuple[str, str, str]:
    return route.registry, route.repository, route.key


def unknown(call: Any) -> errors.RegistryError:
    with pytest.raises(errors.NameUnknown) as caught:
        call()
    error = caught.value
    assert error.status == 404
    assert error.code == "NAME_UNKNOWN"
    return error


# -- 1. ns --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "registry"),
    [
        ("ghcr.io", "ghcr.io"),
        ("registry.lab:5000", "registry.lab:5000"),  # port included, as containerd sends it
        ("docker.io", "docker.io"),
        ("GHCR.io", "ghcr.io"),  # host names are case-insensitive
        ("index.docker.io", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
    ],
)
def test_ns_names_the_registry(ns: str, registry: str):
    assert MIRROR.route("acme/app", ns).registry == registry


def test_ns_wins_over_a_prefix():
    route = MIRROR.route("ghcr.io/acme/app", "registry.lab:5000")
    assert where(route) == (
        "registry.lab:5000",
        "ghcr.io/acme/app",
        "registry.lab:5000/ghcr.io/acme/app",
    )


@pytest.mark.parametrize(
    "ns",
    [
        "quay.io",
        "registry.lab",  # the port is part of the name
        "registry.lab:5001",
        "ghcr.io/",
        "ghcr.io/acme",
        "ghcr.io%3A443",  # still encoded: decoding is the server's, once
        "ghcr.io:443",
        "lab",  # a prefix is not a registry name
        " ",
        "ghcr.io\n",
        "ghcr.\u0456o",  # a Cyrillic i
        "x" * 5000,
    ],
)
def test_an_unknown_ns_is_name_unknown_naming_the_registries(ns: str):
    error = unknown(lambda: MIRROR.route("acme/app", ns))
    for registry in ("docker.io", "ghcr.io", "registry.lab:5000"):
        assert registry in error.message
    assert error.detail == {
        "name": "acme/app",
        "registries": ["docker.io", "ghcr.io", "registry.lab:5000"],
        "ns": ns,
    }


def test_an_empty_ns_is_no_ns():
    assert MIRROR.route("acme/app", "").registry == "docker.io"


# -- 2. prefix ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ghcr.io/acme/app", ("ghcr.io", "acme/app", "ghcr.io/acme/app")),
        ("lab/team/tool", ("registry.lab:5000", "team/tool", "registry.lab:5000/team/tool")),
        ("docker.io/qnib/bench", ("docker.io", "qnib/bench", "docker.io/qnib/bench")),
        # Not a prefix: the whole path is the default upstream's repository.
        ("ghcr/acme/app", ("docker.io", "ghcr/acme/app", "docker.io/ghcr/acme/app")),
        ("acme/ghcr.io/app", ("docker.io", "acme/ghcr.io/app", "docker.io/acme/ghcr.io/app")),
    ],
)
def test_a_first_component_equal_to_a_prefix_routes_there(
    name: str, expected: tuple[str, str, str]
):
    assert where(MIRROR.route(name)) == expected


@pytest.mark.parametrize("name", ["ghcr.io", "lab", "docker.io"])
def test_a_prefix_alone_names_no_repository(name: str):
    error = unknown(lambda: MIRROR.route(name))
    assert "name a repository after it" in error.message


# -- 3. default --------------------------------------------------------------------------


def test_without_a_default_an_unprefixed_name_is_name_unknown():
    no_default = router(GHCR, LAB)
    error = unknown(lambda: no_default.route("acme/app"))
    assert "no upstream is the default" in error.message
    assert "(ghcr.io, lab)" in error.message
    assert "ghcr.io, registry.lab:5000" in error.message
    assert where(no_default.route("lab/acme/app"))[0] == "registry.lab:5000"
    ns_only = router({**LAB, "prefix": None})
    assert "(none configured)" in unknown(lambda: ns_only.route("acme/app")).message


# -- Docker Hub's library/ ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ns"),
    [
        ("busybox", "docker.io"),
        ("library/busybox", "docker.io"),
        ("docker.io/busybox", None),
        ("docker.io/library/busybox", None),
        ("busybox", None),
        ("library/busybox", None),
    ],
)
def test_docker_hub_one_part_names_are_library_however_they_arrive(name: str, ns: str | None):
    assert where(MIRROR.route(name, ns)) == (
        "docker.io",
        "library/busybox",
        "docker.io/library/busybox",
    )


def test_library_is_only_docker_hubs():
    assert where(MIRROR.route("ghcr.io/busybox")) == ("ghcr.io", "busybox", "ghcr.io/busybox")
    assert MIRROR.route("busybox", "registry.lab:5000").repository == "busybox"


# -- keys --------------------------------------------------------------------------------


def test_the_same_repository_on_two_registries_has_two_keys():
    keys = {
        MIRROR.route("acme/app", "ghcr.io").key,
        MIRROR.route("ghcr.io/acme/app").key,
        MIRROR.route("acme/app", "registry.lab:5000").key,
        MIRROR.route("lab/acme/app").key,
        MIRROR.route("acme/app").key,
    }
    assert keys == {"ghcr.io/acme/app", "registry.lab:5000/acme/app", "docker.io/acme/app"}


def test_a_default_repository_named_like_a_registry_keeps_its_own_key():
    # docker.io's "ghcr.io-mirror/app" and ghcr.io's "mirror/app" must not meet.
    a = MIRROR.route("ghcr.io-mirror/app")
    b = MIRROR.route("ghcr.io/mirror/app")
    assert a.key != b.key


@pytest.mark.parametrize(
    ("name", "ns"),
    [("acme/app", "ghcr.io"), ("lab/x/y", None), ("busybox", None), ("a/b/c", "docker.io")],
)
def test_a_key_leads_back_to_its_upstream_and_repository(name: str, ns: str | None):
    route = MIRROR.route(name, ns)
    upstream, repository = MIRROR.for_key(route.key)
    assert (upstream.registry, repository) == (route.registry, route.repository)


@pytest.mark.parametrize("key", ["quay.io/acme/app", "ghcr.io", "lab/acme/app", ""])
def test_a_key_of_no_registry_is_name_unknown(key: str):
    unknown(lambda: MIRROR.for_key(key))


def test_the_single_upstream_keeps_unqualified_keys():
    old = legacy(url="http://127.0.0.1:5000")
    route = old.route("qnib/bench")
    assert where(route) == ("127.0.0.1:5000", "qnib/bench", "qnib/bench")
    # A first component that looks like a registry is still a repository there, as before.
    assert old.route("ghcr.io/acme/app").key == "ghcr.io/acme/app"
    assert old.for_key("qnib/bench")[1] == "qnib/bench"
    assert old.route("qnib/bench", "127.0.0.1:5000").key == "qnib/bench"
    unknown(lambda: old.route("qnib/bench", "ghcr.io"))


def test_the_single_docker_hub_upstream_keeps_its_keys():
    old = legacy(url="https://registry-1.docker.io")
    route = old.route("busybox")
    assert where(route) == ("docker.io", "library/busybox", "busybox")
    # Passed on as before: the registry upstream adds library/ itself.
    assert old.for_key("busybox")[1] == "busybox"


_COMPONENT = st.from_regex(r"[a-z0-9]{1,6}(?:[._-][a-z0-9]{1,4})?", fullmatch=True)
NAMES = st.lists(
    st.one_of(_COMPONENT, st.sampled_from(["ghcr.io", "lab", "docker.io", "library"])),
    min_size=1,
    max_size=4,
).map("/".join)


@settings(max_examples=300, deadline=None)
@given(
    name=NAMES, ns=st.one_of(st.none(), st.text(max_size=40), st.sampled_from(MIRROR.registries))
)
def test_any_ns_and_name_route_to_a_configured_registry_or_are_name_unknown(
    name: str, ns: str | None
):
    try:
        route = MIRROR.route(name, ns)
    except errors.NameUnknown as exc:
        assert exc.status == 404
        return
    assert route.registry in MIRROR.registries
    assert NAME_RE.match(route.repository)
    assert route.key == route.qualified
    assert MIRROR.for_key(route.key) == (route.upstream, route.repository)


def test_routes_remembered_answer_as_the_first_time_and_refusals_are_not_remembered():
    mirror = router(GHCR, LAB)  # no default: a name without a prefix is refused
    names = [f"lab/team/app{i}" for i in range(ROUTES_REMEMBERED + 10)]
    for _ in range(2):  # the second pass finds them remembered (and the store once cleared)
        for name in names:
            assert where(mirror.route(name)) == (
                "registry.lab:5000",
                name.removeprefix("lab/"),
                f"registry.lab:5000/{name.removeprefix('lab/')}",
            )
        for _ in range(2):
            unknown(lambda: mirror.route("team/app"))
            unknown(lambda: mirror.route("lab"))
    assert where(mirror.route("team/app", "ghcr.io")) == ("ghcr.io", "team/app", "ghcr.io/team/app")

"""`upstreams:` in the config: each entry's defaults, and every bad combination named by its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from metahub.config import ConfigError, load_config, parse_config
from metahub.hub import make_upstream

HUB = {"registry": "docker.io", "url": "https://registry-1.docker.io", "default": True}
GHCR = {"registry": "ghcr.io", "url": "https://ghcr.io", "username": "bot", "password": "s"}
LAB = {"registry": "registry.lab:5000", "url": "http://10.0.0.5:5000", "insecure": True}


def upstreams(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"upstreams": list(entries)}


def refused(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    return str(caught.value)


def test_the_issue_example_with_its_defaults_filled_in():
    settings = parse_config(upstreams(HUB, GHCR, {**LAB, "prefix": "lab"}))
    found = {u.registry: (u.prefix, u.default, u.legacy) for u in settings.configured_upstreams}
    assert found == {
        "docker.io": ("docker.io", True, False),
        "ghcr.io": ("ghcr.io", False, False),
        # A port makes no valid path component: a prefix must be given, else none.
        "registry.lab:5000": ("lab", False, False),
    }
    ghcr = settings.configured_upstreams[1].config
    assert (ghcr.username, ghcr.password) == ("bot", "s")  # per-upstream credentials
    assert settings.default_upstream is not None
    assert settings.default_upstream.registry == "docker.io"


def test_a_registry_with_a_port_and_no_prefix_is_reached_by_ns_only():
    settings = parse_config(upstreams(HUB, LAB))
    assert settings.configured_upstreams[1].prefix is None


def test_registry_defaults_to_the_url_host_and_docker_hub_is_docker_io():
    settings = parse_config(
        upstreams({"url": "https://index.docker.io"}, {"url": "http://Registry.Lab:5000/"})
    )
    assert [u.registry for u in settings.configured_upstreams] == [
        "docker.io",
        "registry.lab:5000",
    ]


def test_every_per_upstream_setting_is_per_entry(tmp_path: Path):
    settings = parse_config(
        upstreams(
            {
                **GHCR,
                "connect_timeout": 1,
                "read_timeout": 2,
                "retries": 3,
                "min_rate": "1KiB",
                "request_timeout": 4,
                "redirect_hosts": ["cdn.example.org"],
            },
            {"registry": "local", "path": str(tmp_path)},
        )
    )
    ghcr, local = (u.config for u in settings.configured_upstreams)
    assert (ghcr.connect_timeout, ghcr.read_timeout, ghcr.retries) == (1, 2, 3)
    assert (ghcr.min_rate, ghcr.request_timeout) == (1024, 4)
    assert ghcr.redirect_hosts == ("cdn.example.org",)
    assert local.path == tmp_path and local.kind == "oci-layout"


def test_a_layout_path_in_upstreams_is_relative_to_the_config_file(tmp_path: Path):
    config = tmp_path / "conf" / "metahub.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump(upstreams({"registry": "local", "path": "store"})))
    settings = load_config(config)
    assert settings.configured_upstreams[0].config.path == config.parent / "store"


def test_the_single_upstream_key_is_one_default_upstream_named_by_its_host():
    settings = parse_config({"upstream": {"url": "http://127.0.0.1:5000"}})
    (only,) = settings.configured_upstreams
    assert (only.registry, only.prefix, only.default, only.legacy) == (
        "127.0.0.1:5000",
        None,  # no prefix unless given: every path reaches it as it did before
        True,
        True,
    )


def test_the_single_upstream_may_name_its_registry(tmp_path: Path):
    settings = parse_config({"upstream": {"path": str(tmp_path), "registry": "registry.lab"}})
    assert settings.configured_upstreams[0].registry == "registry.lab"
    assert parse_config({"upstream": {"path": str(tmp_path)}}).configured_upstreams[0].registry


@pytest.mark.parametrize(
    ("raw", "key", "words"),
    [
        (upstreams(HUB, {**GHCR, "default": True}), "upstreams.1.default", "at most one"),
        (upstreams(HUB, {**GHCR, "registry": "docker.io"}), "upstreams.1.registry", "docker.io"),
        (
            upstreams(HUB, {**GHCR, "registry": "index.docker.io"}),
            "upstreams.1.registry",
            "docker.io is also upstreams.0",
        ),
        (upstreams(HUB, {**LAB, "prefix": "docker.io"}), "upstreams.1.prefix", "also the prefix"),
        (
            upstreams({**LAB, "prefix": "ghcr.io"}, GHCR),
            "upstreams.1.prefix",
            "'ghcr.io' (by default: its registry) is also the prefix of upstreams.0",
        ),
        (upstreams(HUB, {**GHCR, "prefix": "a/b"}), "upstreams.1.prefix", "path component"),
        (upstreams(HUB, {**GHCR, "prefix": "Lab"}), "upstreams.1.prefix", "path component"),
        (upstreams(HUB, {**GHCR, "prefix": "lab:5000"}), "upstreams.1.prefix", "path component"),
        (upstreams(HUB, {**GHCR, "prefix": ""}), "upstreams.1.prefix", "path component"),
        (upstreams(HUB, {**GHCR, "registry": "ghcr.io/x"}), "upstreams.1.registry", "not a"),
        (upstreams(HUB, {**GHCR, "registry": "https://ghcr.io"}), "upstreams.1.registry", "not a"),
        (upstreams({"path": "/srv/layout"}), "upstreams.0.registry", "required"),
        (upstreams({"registry": "x.io"}), "upstreams.0", "exactly one of 'url'"),
        (
            {"upstream": {"url": "https://ghcr.io"}, **upstreams(HUB)},
            "not both",
            "'upstream' (one upstream) or 'upstreams'",
        ),
        ({}, "upstream", "set 'upstream'"),
        (upstreams(), "upstream", "set 'upstream'"),
        (
            {**upstreams(GHCR), "images": [{"image": "x/y:1", "manifests": [{"image": "x/z:1"}]}]},
            "images",
            "default upstream",
        ),
    ],
)
def test_bad_upstreams_are_refused_naming_the_key(raw: dict[str, Any], key: str, words: str):
    message = refused(raw)
    assert key in message
    assert words in message
    assert "Traceback" not in message


def test_errors_of_a_layout_among_upstreams_name_its_registry(tmp_path: Path):
    settings = parse_config(upstreams({"registry": "local", "path": str(tmp_path / "none")}))
    upstream = make_upstream(settings.configured_upstreams[0])
    assert upstream.description == f"upstream local (OCI layout {tmp_path / 'none'})"


def test_no_default_is_allowed_when_every_request_names_its_registry():
    settings = parse_config(upstreams(GHCR, LAB))
    assert settings.default_upstream is None

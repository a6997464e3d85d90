"""The config file: validated, with errors that name the bad key path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from metahub.config import ConfigError, Settings, load_config, parse_config

ARGON2_HASH = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
BCRYPT_HASH = "$2b$12$KIXQJb8rS3E1d0m6m6m6meXq3b2tF1b1Vb3a0qZ8m6m6m6m6m6m6m"


@pytest.fixture(autouse=True)
def _no_metahub_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Environment variables override the file; keep the runner's own out of these tests."""
    for name in list(os.environ):
        if name.upper().startswith("METAHUB_"):
            monkeypatch.delenv(name)


def machine_type(name: str = "gpu", **fields: Any) -> dict[str, Any]:
    value: dict[str, Any] = {"name": name, "login": f"{name}-login", "password": "pw"}
    value.update(fields)
    return {k: v for k, v in value.items() if v is not None}


def config(**fields: Any) -> dict[str, Any]:
    value: dict[str, Any] = {"upstream": {"url": "https://registry.example"}}
    value.update(fields)
    return value


def test_minimal_config_defaults() -> None:
    settings = parse_config(config())
    assert settings.upstream.url == "https://registry.example"
    assert settings.upstream.kind == "registry"
    assert settings.upstream.path is None
    assert settings.machine_types == ()
    assert settings.anonymous is None
    assert settings.token.ttl == 300
    assert settings.data_dir == Path("data")
    assert settings.public_url is None
    assert settings.features.matchers == {}
    assert settings.database.filtered_retention_days is None  # retention is off
    assert settings.database.last_served_interval == 300


def test_full_config() -> None:
    settings = parse_config(
        config(
            upstream={"path": "/srv/layout"},
            machine_types=[
                machine_type("gpu", features=["cpu:skylake", "nvcap:8.6"]),
                machine_type("cpu", password=None, password_hash=ARGON2_HASH),
            ],
            anonymous={"machine_type": "cpu"},
            features={"matchers": {"gpu": "exact"}, "aliases": {"cpu": {"myhost": "haswell"}}},
            token={"ttl": 600},
            public_url="https://hub.example",
        )
    )
    assert settings.upstream.kind == "oci-layout"
    assert settings.upstream.path == Path("/srv/layout")
    gpu, cpu = settings.machine_types
    assert gpu.name == "gpu"
    assert gpu.features == ("cpu:skylake", "nvcap:8.6")
    assert gpu.login == "gpu-login"
    assert cpu.name == "cpu"
    assert cpu.password_hash == ARGON2_HASH
    assert settings.anonymous is not None
    assert settings.anonymous.machine_type == "cpu"
    assert settings.features.aliases == {"cpu": {"myhost": "haswell"}}
    assert settings.token.ttl == 600


def test_anonymous_unfiltered() -> None:
    settings = parse_config(config(anonymous={"unfiltered": True}))
    assert settings.anonymous is not None
    assert settings.anonymous.unfiltered
    assert settings.anonymous.machine_type is None


def test_settings_are_frozen() -> None:
    settings = parse_config(config())
    with pytest.raises(Exception):  # noqa: B017 - pydantic's ValidationError
        settings.public_url = "https://elsewhere"  # type: ignore[misc]


BAD_CONFIGS = [
    pytest.param(config(bogus=1), "bogus", "unknown key", id="unknown-top-level-key"),
    pytest.param(
        config(upstream={"url": "https://r", "bogus": 1}),
        "upstream.bogus",
        "unknown key",
        id="unknown-upstream-key",
    ),
    pytest.param(
        config(machine_types=[machine_type(gpus=2)]),
        "machine_types.0.gpus",
        "unknown key",
        id="unknown-machine-type-key",
    ),
    pytest.param(
        config(token={"ttl": 300, "lifetime": 5}),
        "token.lifetime",
        "unknown key",
        id="unknown-token-key",
    ),
    pytest.param({}, "upstream", "", id="missing-upstream"),
    pytest.param(
        config(upstream={"url": "https://r", "path": "/srv"}),
        "upstream",
        "exactly one of 'url'",
        id="both-url-and-path",
    ),
    pytest.param(config(upstream={}), "upstream", "exactly one of 'url'", id="neither-url-path"),
    pytest.param(
        config(upstream={"url": "https://r", "password": "x"}),
        "upstream",
        "'password' needs 'username'",
        id="password-without-username",
    ),
    pytest.param(
        config(upstream={"url": "https://r", "connect_timeout": 0}),
        "upstream.connect_timeout",
        "",
        id="zero-timeout",
    ),
    pytest.param(
        config(machine_types=[machine_type(password_hash=ARGON2_HASH)]),
        "machine_types.0",
        "exactly one of 'password' or 'password_hash'",
        id="both-password-and-hash",
    ),
    pytest.param(
        config(machine_types=[machine_type(password=None)]),
        "machine_types.0",
        "exactly one of 'password' or 'password_hash'",
        id="neither-password-nor-hash",
    ),
    pytest.param(
        config(
            machine_types=[
                machine_type(),
                machine_type("b", password=None, password_hash=BCRYPT_HASH),
            ]
        ),
        "machine_types.1",
        "argon2",
        id="non-argon2-hash",
    ),
    pytest.param(
        config(machine_types=[machine_type(features=["cpu"])]),
        "machine_types.0.features",
        "invalid feature 'cpu'",
        id="feature-without-value",
    ),
    pytest.param(
        config(machine_types=[machine_type("a"), machine_type("b", features=["cpu:sky lake"])]),
        "machine_types.1.features",
        "invalid feature",
        id="feature-with-space",
    ),
    pytest.param(
        config(machine_types=[machine_type(features="cpu:skylake:x y")]),
        "machine_types.0.features",
        "",
        id="features-not-a-list",
    ),
    pytest.param(
        config(machine_types=[machine_type(login="a:b")]),
        "machine_types.0.login",
        "':'",
        id="login-with-colon",
    ),
    pytest.param(
        config(machine_types=[machine_type(login="a b")]),
        "machine_types.0.login",
        "whitespace",
        id="login-with-space",
    ),
    pytest.param(
        config(machine_types=[machine_type(login="")]),
        "machine_types.0.login",
        "",
        id="empty-login",
    ),
    pytest.param(
        config(machine_types=[machine_type(login="a#b")]),
        "machine_types.0.login",
        "use letters, digits and . _ @ + / = -",
        id="login-with-other-punctuation",
    ),
    pytest.param(
        config(machine_types=[machine_type("-gpu")]),
        "machine_types.0.name",
        "use letters, digits, '.', '_' and '-'",
        id="name-leading-dash",
    ),
    pytest.param(
        config(machine_types=[machine_type("g" * 256, login="gpu")]),
        "machine_types.0.name",
        "use letters, digits",
        id="name-longer-than-the-database-holds",
    ),
    pytest.param(
        config(accounts=[{"login": "hpc/cpu=zen3", "password": "pw"}]),
        "accounts.0.login",
        "use letters, digits, '.', '_' and '-'",
        id="account-name-with-slash",
    ),
    pytest.param(
        config(machine_types=[machine_type("gpu box")]),
        "machine_types.0.name",
        "",
        id="name-with-space",
    ),
    pytest.param(
        config(machine_types=[machine_type("gpu"), machine_type("gpu", login="other")]),
        "machine_types",
        "duplicate name gpu",
        id="duplicate-names",
    ),
    pytest.param(
        config(machine_types=[machine_type("a", login="x"), machine_type("b", login="x")]),
        "machine_types",
        "duplicate login x",
        id="duplicate-logins",
    ),
    pytest.param(
        config(machine_types=[machine_type("gpu")], anonymous={"machine_type": "cpu"}),
        "anonymous.machine_type",
        "'cpu'",
        id="anonymous-unknown-type",
    ),
    pytest.param(
        config(machine_types=[machine_type("gpu")], anonymous={}),
        "anonymous",
        "exactly one of 'machine_type'",
        id="anonymous-neither",
    ),
    pytest.param(
        config(
            machine_types=[machine_type("gpu")],
            anonymous={"machine_type": "gpu", "unfiltered": True},
        ),
        "anonymous",
        "exactly one of 'machine_type'",
        id="anonymous-both",
    ),
    pytest.param(
        config(features={"matchers": {"cpu": "fuzzy"}}),
        "features.matchers",
        "unknown matcher 'fuzzy'",
        id="unknown-matcher",
    ),
    pytest.param(config(token={"ttl": 59}), "token.ttl", "", id="ttl-too-short"),
    pytest.param(config(token={"ttl": 86401}), "token.ttl", "", id="ttl-too-long"),
    pytest.param(
        config(database={"refresh_interval": 6}),
        "database.refresh_interval",
        "less than or equal to 5",
        id="refresh-slower-than-revocation-bound",
    ),
    pytest.param(
        config(database={"filtered_retention_days": 0}),
        "database.filtered_retention_days",
        "greater than 0",
        id="retention-of-nothing",
    ),
    pytest.param(
        config(database={"last_served_interval": 0}),
        "database.last_served_interval",
        "greater than 0",
        id="last-served-interval-zero",
    ),
    pytest.param(
        config(database={"url": "mysql://db/metahub"}),
        "database.url",
        "postgresql+asyncpg://",
        id="unsupported-database",
    ),
]


@pytest.mark.parametrize(("raw", "where", "message"), BAD_CONFIGS)
def test_errors_name_the_key(raw: dict[str, Any], where: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="test.yaml")
    text = str(info.value)
    assert text.startswith("invalid test.yaml:")
    assert where in text
    assert message in text


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        (config(bogus=1), "  bogus: unknown key"),
        (config(machine_types=[machine_type(features=["cpu"])]), "  machine_types.0.features: "),
        (config(machine_types=[machine_type(password=None)]), "  machine_types.0: "),
        (config(features={"matchers": {"cpu": "fuzzy"}}), "  features.matchers: "),
        (config(token={"ttl": 1}), "  token.ttl: "),
    ],
)
def test_error_lines_start_with_the_key_path(raw: dict[str, Any], line: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert any(text.startswith(line) for text in str(info.value).splitlines()[1:])


def test_every_error_is_reported() -> None:
    raw = config(bogus=1, token={"ttl": 1}, machine_types=[machine_type(features=["x"])])
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    text = str(info.value)
    for where in ("bogus", "token.ttl", "machine_types.0.features"):
        assert where in text


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# --- load_config -------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_relative_paths_are_resolved_against_the_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = write(
        tmp_path / "etc" / "metahub.yaml",
        "upstream:\n  path: images/layout\ndata_dir: state\n",
    )
    settings = load_config(path)
    assert settings.data_dir == tmp_path / "etc" / "state"
    assert settings.upstream.path == tmp_path / "etc" / "images" / "layout"


def test_default_data_dir_is_next_to_the_config(tmp_path: Path) -> None:
    path = write(tmp_path / "conf" / "metahub.yaml", "upstream:\n  url: https://r\n")
    assert load_config(path).data_dir == tmp_path / "conf" / "data"


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    data = tmp_path / "data-abs"
    path = write(
        tmp_path / "conf" / "metahub.yaml",
        f"upstream:\n  path: {layout}\ndata_dir: {data}\n",
    )
    settings = load_config(path)
    assert settings.upstream.path == layout
    assert settings.data_dir == data


def test_load_config_reads_everything(tmp_path: Path) -> None:
    path = write(
        tmp_path / "metahub.yaml",
        """
upstream:
  url: https://registry.example
machine_types:
  - name: skylake
    login: sky
    password: secret
    features: [cpu:skylake]
anonymous:
  unfiltered: true
token:
  ttl: 120
""",
    )
    settings = load_config(path)
    assert isinstance(settings, Settings)
    assert settings.machine_types[0].features == ("cpu:skylake",)
    assert settings.token.ttl == 120


def test_load_config_error_names_file_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path / "metahub.yaml",
        "upstream:\n  url: https://r\nmachine_types:\n"
        "  - {name: a, login: a, password: p, features: [broadwell]}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "machine_types.0.features" in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("upstream: [unclosed\n", "not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
        ("just a string\n", "must be a mapping"),
        ("", "upstream"),
    ],
)
def test_load_config_rejects(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "metahub.yaml", text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match="cannot read config") as info:
        load_config(path)
    assert str(path) in str(info.value)


# --- environment -------------------------------------------------------------------------------


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METAHUB_TOKEN__TTL", "900")
    monkeypatch.setenv("METAHUB_PUBLIC_URL", "https://from-env")
    settings = parse_config(config(token={"ttl": 120}, public_url="https://from-file"))
    assert settings.token.ttl == 900
    assert settings.public_url == "https://from-env"


def test_environment_supplies_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METAHUB_UPSTREAM__PASSWORD", "from-env")
    settings = parse_config(config(upstream={"url": "https://r", "username": "u"}))
    assert settings.upstream.password == "from-env"
    assert settings.upstream.url == "https://r"


def test_environment_values_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METAHUB_TOKEN__TTL", "5")
    with pytest.raises(ConfigError, match=r"token\.ttl"):
        parse_config(config())


def test_config_path_variable_is_not_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """`metahub serve` sets METAHUB_CONFIG for its workers; it must not break parsing."""
    monkeypatch.setenv("METAHUB_CONFIG", "/etc/metahub.yaml")
    assert parse_config(config()).upstream.url == "https://registry.example"


def test_upstream_pace_redirects_and_shutdown_have_defaults() -> None:
    settings = parse_config(config())
    assert settings.upstream.min_rate == 64 * 1024
    assert settings.upstream.min_rate_window == 30
    assert settings.upstream.request_timeout == 60
    assert settings.upstream.redirect_hosts is None  # the built-in list
    assert settings.server.shutdown_timeout == 10


def test_upstream_pace_redirects_and_shutdown_can_be_set() -> None:
    upstream = {
        "url": "https://r",
        "min_rate": "1MiB",
        "min_rate_window": 5,
        "request_timeout": 20,
        "redirect_hosts": ["minio.internal:9000", "*.s3.amazonaws.com"],
    }
    settings = parse_config(config(upstream=upstream, server={"shutdown_timeout": 3}))
    assert settings.upstream.min_rate == 1024 * 1024
    assert settings.upstream.redirect_hosts == ("minio.internal:9000", "*.s3.amazonaws.com")
    assert settings.server.shutdown_timeout == 3


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("upstream", "min_rate", "fast"),
        ("upstream", "min_rate_window", 0),
        ("upstream", "request_timeout", -1),
        ("server", "shutdown_timeout", -1),
    ],
)
def test_bad_pace_and_shutdown_settings_are_named(section: str, key: str, value: object) -> None:
    raw = config()
    raw[section] = {**raw.get(section, {}), key: value}
    with pytest.raises(ConfigError, match=rf"{section}\.{key}"):
        parse_config(raw)

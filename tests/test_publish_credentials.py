"""Registry logins from docker's config.json, and from credential helpers (real executables)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from metahub.publish.credentials import (
    Credentials,
    CredentialsError,
    docker_config_dir,
    docker_credentials,
    parse_credentials,
)


def write_config(directory: Path, config: dict[str, object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def auth(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_auths_are_matched_by_host_whatever_the_key_looks_like(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {
            "auths": {
                "127.0.0.1:5000": auth("plain", "p:w"),
                "http://localhost:5001/v2/": auth("url", "x"),
                "https://index.docker.io/v1/": auth("hub", "h"),
                "reg.example.org": {"username": "fields", "password": "f"},
                "empty.example.org": {},
            }
        },
    )
    assert docker_credentials("127.0.0.1:5000", config) == Credentials("plain", "p:w")
    assert docker_credentials("localhost:5001", config) == Credentials("url", "x")
    for hub in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        assert docker_credentials(hub, config) == Credentials("hub", "h")
    assert docker_credentials("REG.example.org", config) == Credentials("fields", "f")
    assert docker_credentials("empty.example.org", config) is None
    assert docker_credentials("other.example.org", config) is None
    assert docker_credentials("127.0.0.1:5000", tmp_path / "nowhere") is None


def test_docker_config_env_names_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "cfg"))
    assert docker_config_dir() == tmp_path / "cfg"
    monkeypatch.delenv("DOCKER_CONFIG")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert docker_config_dir() == tmp_path / "home" / ".docker"


def test_bad_entries_say_where(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"auths": {"r.example.org": {"auth": "not base64!"}}})
    with pytest.raises(CredentialsError, match=r"auths\['r.example.org'\]\.auth is not base64"):
        docker_credentials("r.example.org", config)
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(CredentialsError, match="cannot read"):
        docker_credentials("r.example.org", config)


def helper(bin_dir: Path, name: str, store: dict[str, dict[str, str]]) -> None:
    """A docker-credential-NAME that answers `get` from `store`, as the protocol says."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(
        "#!/bin/sh\n"
        '[ "$1" = get ] || exit 2\n'
        "read -r server\n"
        'case "$server" in\n'
        + "".join(
            f"  {server}) printf '%s' '{json.dumps(answer)}' ;;\n"
            for server, answer in store.items()
        )
        + "  *) echo 'credentials not found in native keychain'; exit 1 ;;\n"
        "esac\n"
    )
    script.chmod(0o755)


def test_credential_helpers_are_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    helper(bin_dir, "mhtest", {"reg.example.org": {"Username": "helped", "Secret": "s3"}})
    helper(bin_dir, "store", {"https://index.docker.io/v1/": {"Username": "hub", "Secret": "t"}})
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    config = write_config(
        tmp_path / "cfg",
        {
            "credHelpers": {"reg.example.org": "mhtest"},
            "credsStore": "store",
            "auths": {"plain.example.org": auth("plain", "p")},
        },
    )
    assert docker_credentials("reg.example.org", config) == Credentials("helped", "s3")
    assert docker_credentials("docker.io", config) == Credentials("hub", "t")
    # auths come before the default store; the store's "not found" means no login.
    assert docker_credentials("plain.example.org", config) == Credentials("plain", "p")
    assert docker_credentials("unknown.example.org", config) is None
    missing = write_config(tmp_path / "missing", {"credHelpers": {"reg.example.org": "absent"}})
    with pytest.raises(CredentialsError, match="docker-credential-absent is not on PATH"):
        docker_credentials("reg.example.org", missing)


def test_creds_option_format() -> None:
    assert parse_credentials("user:pa:ss") == Credentials("user", "pa:ss")
    assert "pa:ss" not in repr(parse_credentials("user:pa:ss"))
    for bad in ("user", ":password", ""):
        with pytest.raises(CredentialsError):
            parse_credentials(bad)

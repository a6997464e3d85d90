"""The `metahub` command as a user runs it: a subprocess of `python -m metahub`."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import argon2
import httpx
import pytest

from tests.support.metahub_server import MetaHubServer

PASSWORD = "correct horse battery staple"
REF_NAME = "org.opencontainers.image.ref.name"


def metahub(
    *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    # No METAHUB_* from the caller's environment may change what the command sees.
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAHUB_")}
    return subprocess.run(
        [sys.executable, "-m", "metahub", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
        start_new_session=True,  # no controlling terminal: a password prompt reads stdin
    )


@pytest.fixture(scope="module")
def password_hash() -> str:
    result = metahub("hash-password", "--password", PASSWORD)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    return lines[0]


# -- hash-password ------------------------------------------------------------------------------


def test_hash_password_prints_an_argon2_hash_of_the_password(password_hash: str):
    hasher = argon2.PasswordHasher()
    assert password_hash.startswith("$argon2id$")
    assert hasher.verify(password_hash, PASSWORD)
    with pytest.raises(argon2.exceptions.VerifyMismatchError):
        hasher.verify(password_hash, PASSWORD + "!")


def test_hash_password_salts_every_hash(password_hash: str):
    again = metahub("hash-password", "--password", PASSWORD).stdout.strip()
    assert again != password_hash
    assert argon2.PasswordHasher().verify(again, PASSWORD)


def test_hash_password_prompts_twice_and_prints_only_the_hash():
    result = metahub("hash-password", stdin="s3cret\ns3cret\n")
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert argon2.PasswordHasher().verify(line, "s3cret")
    mismatch = metahub("hash-password", stdin="s3cret\nother\n")
    assert mismatch.returncode != 0
    assert "$argon2" not in mismatch.stdout
    assert "do not match" in mismatch.stderr + mismatch.stdout


@pytest.fixture(scope="module")
def hashed_hub(
    tmp_path_factory: pytest.TempPathFactory, password_hash: str, demo_layout: Path
) -> Iterator[tuple[MetaHubServer, Path]]:
    tmp = tmp_path_factory.mktemp("cli-hub")
    layout = demo_layout
    config = {
        "upstream": {"path": str(layout)},
        "machine_types": [
            {
                "name": "sky",
                "login": "hashed",
                "password_hash": password_hash,
                "features": ["cpu:skylake"],
            }
        ],
    }
    with MetaHubServer(tmp, config) as server:
        yield server, layout


def test_a_password_hash_from_the_cli_lets_that_login_pull(
    hashed_hub: tuple[MetaHubServer, Path],
):
    server, layout = hashed_hub
    index = json.loads((layout / "index.json").read_bytes())
    tags = {m["annotations"][REF_NAME]: m["digest"] for m in index["manifests"]}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        response = http.get("/v2/qnib/bench/manifests/latest", auth=("hashed", PASSWORD))
        assert response.status_code == 200, response.text
        amd64 = [
            m["digest"]
            for m in response.json()["manifests"]
            if m["platform"]["architecture"] == "amd64"
        ]
        assert amd64 == [tags["qnib/bench:cpu-skylake"]]
        token = http.get(
            "/token",
            params={"service": "metahub", "scope": "repository:qnib/bench:pull"},
            auth=("hashed", PASSWORD),
        )
        assert token.status_code == 200
        with_token = http.get(
            "/v2/qnib/bench/tags/list",
            headers={"authorization": f"Bearer {token.json()['token']}"},
        )
        assert with_token.status_code == 200


@pytest.mark.parametrize(
    "credentials",
    [("hashed", PASSWORD + "!"), ("hashed", ""), ("hashed", "$argon2id$"), ("nobody", PASSWORD)],
)
def test_a_wrong_password_is_refused(
    hashed_hub: tuple[MetaHubServer, Path], credentials: tuple[str, str]
):
    server, _ = hashed_hub
    with httpx.Client(base_url=server.url, timeout=30) as http:
        response = http.get("/v2/qnib/bench/manifests/latest", auth=credentials)
        assert response.status_code == 401
        assert response.json()["errors"][0]["code"] == "UNAUTHORIZED"
        token = http.get("/token", params={"service": "metahub"}, auth=credentials)
        assert token.status_code == 401


# -- --version and config errors ------------------------------------------------------------------


def test_version():
    result = metahub("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"metahub, version {importlib.metadata.version('metahub')}"


def assert_clean_failure(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip()


def test_serve_with_a_missing_config_fails_clearly(tmp_path: Path):
    result = metahub("serve", "--config", "missing.yaml", cwd=tmp_path)
    assert_clean_failure(result)
    assert "missing.yaml" in result.stderr
    assert "does not exist" in result.stderr


def test_serve_without_a_config_is_a_usage_error():
    result = metahub("serve")
    assert_clean_failure(result)
    assert result.returncode == 2
    assert "Missing option '--config'" in result.stderr


def test_config_is_taken_before_the_command_as_after_it(tmp_path: Path):
    config = tmp_path / "metahub.yaml"
    config.write_text("upstream: {path: layout}\ndata_dir: data\n")
    before = metahub("--config", str(config), "db", "upgrade")
    assert before.returncode == 0, before.stderr
    assert (tmp_path / "data" / "metahub.db").is_file()
    after = metahub("db", "upgrade", "--config", str(config))
    assert after.returncode == 0, after.stderr
    assert before.stdout == after.stdout
    assert before.stdout.startswith("database is at revision ")
    # Given twice, the one after the command wins.
    other = tmp_path / "other.yaml"
    other.write_text("upstream: {path: layout}\ndata_dir: other-data\n")
    both = metahub("--config", str(config), "db", "upgrade", "--config", str(other))
    assert both.returncode == 0, both.stderr
    assert (tmp_path / "other-data" / "metahub.db").is_file()


BAD_CONFIGS = {
    "unknown-nested-key": (
        "upstream:\n  path: layout\n  colour: blue\n",
        ["upstream.colour: unknown key"],
    ),
    "unknown-top-level-key": (
        "upstream: {path: layout}\nmachine_types:\n"
        "  - {name: a, login: a, password: a}\nbogus: 1\n",
        ["bogus: unknown key"],
    ),
    "unclosed-flow": ("upstream: {path: [unclosed\n", ["not valid YAML", "line 1"]),
    "not-a-mapping": ("- just\n- a list\n", ["must be a mapping"]),
}


@pytest.fixture(scope="module")
def bad_config_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[Path, subprocess.CompletedProcess[str]]]:
    """`metahub serve` on each bad config, all at once: each start costs a second of imports."""
    tmp = tmp_path_factory.mktemp("bad-configs")
    paths = {}
    for key, (text, _) in BAD_CONFIGS.items():
        paths[key] = tmp / f"{key}.yaml"
        paths[key].write_text(text)
    with ThreadPoolExecutor(len(paths)) as pool:
        runs = {
            key: pool.submit(metahub, "serve", "--config", str(path), "--port", "0")
            for key, path in paths.items()
        }
        return {key: (paths[key], run.result()) for key, run in runs.items()}


@pytest.mark.parametrize("key", sorted(BAD_CONFIGS))
def test_serve_with_a_bad_config_names_the_problem(
    bad_config_runs: dict[str, tuple[Path, subprocess.CompletedProcess[str]]], key: str
):
    config, result = bad_config_runs[key]
    assert_clean_failure(result)
    assert str(config) in result.stderr
    for fragment in BAD_CONFIGS[key][1]:
        assert fragment in result.stderr


# -- start-up -----------------------------------------------------------------------------------
def test_importing_the_cli_loads_no_server_or_client_stack() -> None:
    """Every command starts by importing metahub.cli; the heavy stacks load only when used."""
    heavy = ("aiohttp", "sqlalchemy", "fastapi", "uvicorn")
    probe = (
        "import sys, metahub.cli; "
        f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""

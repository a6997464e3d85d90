"""`metahub admin|machine-type|credential` as an operator runs them, on the configured database
(`--config`) and on a running server (`--server URL --token TOKEN`), checked through their
output and through the registry.

Most runs are in-process (click's runner, which also catches any exception a command lets
escape); those about prompts, exit statuses and tracebacks of the real command run
`python -m metahub` in a subprocess.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner

from metahub.cli import main
from tests.support.metahub_server import MetaHubServer

ADMIN_TOKEN = "admin-token-for-cli-tests"
CONFIG_TYPE = {
    "name": "config-type",
    "login": "config-login",
    "password": "config-password",
    "features": ["cpu:broadwell"],
}
ACCEPT_INDEX = "application/vnd.oci.image.index.v1+json"
PASSWORD = "a long admin password"
README = Path(__file__).parent.parent / "README.md"


ENV = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str
    escaped: BaseException | None = None  # an exception the command let escape (in-process)


def metahub(*args: str, stdin: str | None = None, process: bool = False) -> Ran:
    if process:
        env = {k: v for k, v in os.environ.items() if not k.startswith("METAHUB_")}
        done = subprocess.run(
            [sys.executable, "-m", "metahub", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            env={**env, **ENV},
            start_new_session=True,  # no controlling terminal: prompts read stdin
            check=False,
        )
        return Ran(done.returncode, done.stdout, done.stderr)
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("METAHUB_")}
    result = CliRunner().invoke(main, list(args), input=stdin, env={**unset, **ENV})
    escaped = result.exception if not isinstance(result.exception, SystemExit) else None
    return Ran(result.exit_code, result.stdout, result.stderr, escaped)


def ok(result: Ran) -> str:
    assert result.escaped is None, repr(result.escaped)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    return result.stdout


def fails(result: Ran, *words: str) -> str:
    """A clear message: non-zero exit, `Error: ...` naming what is wrong, no traceback."""
    assert result.escaped is None, repr(result.escaped)
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.startswith(("Error: ", "Usage: ")), result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)
    return result.stderr


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("management-cli")


@pytest.fixture(scope="module")
def layout(demo_layout: Path) -> Path:
    return demo_layout


def config_for(layout: Path, data_dir: Path) -> dict[str, Any]:
    return {
        "upstream": {"path": str(layout)},
        "data_dir": str(data_dir),
        "machine_types": [CONFIG_TYPE],
        "admin": {"tokens": [ADMIN_TOKEN]},
        "login_limit": {"failures": 100000},
    }


@pytest.fixture(scope="module")
def config_file(workdir: Path, layout: Path) -> Path:
    """A config whose database no server uses: the CLI works on it directly."""
    path = workdir / "local.yaml"
    path.write_text(yaml.safe_dump(config_for(layout, workdir / "local-data")))
    return path


@pytest.fixture(scope="module")
def server(workdir: Path, layout: Path) -> Iterator[MetaHubServer]:
    (workdir / "served").mkdir()
    with MetaHubServer(workdir / "served", config_for(layout, workdir / "served" / "data")) as run:
        yield run


@pytest.fixture(params=["local", "remote"])
def target(request: pytest.FixtureRequest, config_file: Path) -> list[str]:
    """The options that say where the CLI works: the database, or the running server."""
    if request.param == "local":
        return ["--config", str(config_file)]
    server: MetaHubServer = request.getfixturevalue("server")
    return ["--server", server.url, "--token", ADMIN_TOKEN]


def cli(target: list[str], group: str, command: str, *args: str, stdin: str | None = None) -> Ran:
    """`metahub GROUP COMMAND <target options> ARGS...`; GROUP may be two words."""
    return metahub(*group.split(), command, *target, *args, stdin=stdin)


def cli_json(target: list[str], group: str, command: str, *args: str) -> Any:
    return json.loads(ok(cli(target, group, command, "--json", *args)))


def add_type(target: list[str], *features: str) -> str:
    name = unique("mt")
    flags = [f"--feature={f}" for f in (features or ("cpu:broadwell",))]
    cli_json(target, "machine-type", "add", name, *flags)
    return name


def table_rows(output: str) -> list[list[str]]:
    """The cells of each body row of a rich table."""
    rows = []
    for line in output.splitlines():
        if line.startswith("│"):
            rows.append([cell.strip() for cell in line.strip("│").split("│")])
    return rows


# -- machine types ----------------------------------------------------------------------------


def test_machine_type_add_list_show_update_delete(target: list[str]) -> None:
    name = unique("a100")
    added = cli_json(
        target,
        "machine-type",
        "add",
        name,
        "--feature",
        "cpu:zen3",
        "--feature",
        "nvcap:8.0",
        "--platform",
        "linux/amd64",
        "--repository",
        "docker.io/library/*",
        "--repository",
        "ghcr.io/acme/**",
        "--description",
        "A100 nodes",
    )
    assert added == {
        "name": name,
        "features": ["cpu:zen3", "nvcap:8.0"],
        "mode": "best",
        "platforms": ["linux/amd64"],
        "repositories": ["docker.io/library/*", "ghcr.io/acme/**"],
        "description": "A100 nodes",
        "revision": 1,
        "config_managed": False,
        "credentials": 0,
    }
    listed = cli_json(target, "machine-type", "list")
    assert added in listed
    assert any(t["name"] == CONFIG_TYPE["name"] and t["config_managed"] for t in listed)
    shown = cli_json(target, "machine-type", "show", name)
    assert shown == {**added, "credential_list": []}

    updated = cli_json(target, "machine-type", "update", name, "--mode", "exact")
    assert updated == {**added, "mode": "exact", "revision": 2}
    replaced = cli_json(target, "machine-type", "update", name, "--feature", "cpu:zen2")
    assert replaced["features"] == ["cpu:zen2"] and replaced["revision"] == 3
    assert replaced["platforms"] == ["linux/amd64"]  # what is not given stays
    assert replaced["repositories"] == ["docker.io/library/*", "ghcr.io/acme/**"]
    narrowed = cli_json(target, "machine-type", "update", name, "--repository", "quay.io/x/*")
    assert narrowed["repositories"] == ["quay.io/x/*"]
    opened = cli_json(target, "machine-type", "update", name, "--all-repositories")
    assert opened["repositories"] == [] and opened["revision"] == 5

    assert ok(cli(target, "machine-type", "delete", name, "--yes")) == f"deleted {name}\n"
    fails(cli(target, "machine-type", "show", name), name, "does not exist")


def test_machine_type_tables(target: list[str]) -> None:
    name = add_type(target, "cpu:zen3", "nvcap:8.0")
    rows = table_rows(ok(cli(target, "machine-type", "list")))
    assert [name, "cpu:zen3, nvcap:8.0", "best", "any", "all", "0", "database"] in rows
    assert [CONFIG_TYPE["name"], "cpu:broadwell", "best", "any", "all", "1", "config"] in rows
    names = [row[0] for row in rows]
    assert names == sorted(names)

    output = ok(cli(target, "machine-type", "show", name))
    assert "machine types" in output and "credentials" in output
    assert table_rows(output) == [
        [name, "cpu:zen3, nvcap:8.0", "best", "any", "all", "0", "database"]
    ]
    added = ok(
        cli(target, "machine-type", "add", unique("t"), "--mode", "exact", "--repository", "x/*")
    )
    assert table_rows(added)[0][1:] == ["-", "exact", "any", "x/*", "0", "database"]


def test_machine_type_delete_asks_first(target: list[str]) -> None:
    name = add_type(target)
    result = cli(target, "machine-type", "delete", name, stdin="n\n")
    assert result.returncode != 0 and "Aborted" in result.stderr
    assert cli_json(target, "machine-type", "show", name)["name"] == name
    ok(cli(target, "machine-type", "delete", name, stdin="y\n"))
    fails(cli(target, "machine-type", "show", name), "does not exist")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["add", "{new}", "--feature", "cpu"], ["features.0", "invalid feature 'cpu'"]),
        (["add", "{new}", "--platform", "linux"], ["platforms.0", "linux"]),
        (["add", "{new}", "--repository", "docker.io"], ["repositories.0", "'docker.io'"]),
        (
            ["add", "{new}", "--repository", "x/*", "--all-repositories"],
            ["--repository or --all-repositories"],
        ),
        (["add", "has space"], ["name"]),
        (["add", "{config}"], ["already exists"]),
        (["show", "{missing}"], ["{missing}", "does not exist"]),
        (["update", "{missing}", "--mode", "best"], ["{missing}", "does not exist"]),
        (["delete", "{missing}", "--yes"], ["{missing}", "does not exist"]),
        (["update", "{config}", "--description", "x"], ["{config}", "config file"]),
        (["delete", "{config}", "--yes"], ["{config}", "config file"]),
        (["update", "{config}"], ["nothing to change"]),
        (["add", "{new}", "--mode", "fastest"], ["fastest"]),
    ],
)
def test_machine_type_errors(target: list[str], args: list[str], words: list[str]) -> None:
    names = {"new": unique("new"), "missing": unique("missing"), "config": CONFIG_TYPE["name"]}
    result = cli(target, "machine-type", *[a.format(**names) for a in args])
    fails(result, *[w.format(**names) for w in words])
    if args[0] == "add":
        listed = [t["name"] for t in cli_json(target, "machine-type", "list")]
        assert names["new"] not in listed


# -- credentials ------------------------------------------------------------------------------


def created_credential(output: str) -> dict[str, str]:
    match = re.fullmatch(
        r"login:    (\S+)\npassword: (\S+)  \(shown once\)\nid:       (\S+)\n", output
    )
    assert match, output
    return dict(zip(("login", "password", "id"), match.groups(), strict=True))


def test_credential_create_list_revoke(target: list[str]) -> None:
    name = add_type(target)
    issued = created_credential(ok(cli(target, "credential", "create", name)))
    assert issued["login"].startswith(f"{name}-")
    named = cli_json(target, "credential", "create", name, "--login", "node7@rack2")
    assert {"id", "login", "password"} <= set(named) and named["login"] == "node7@rack2"

    for args in ([], ["--machine-type", name]):
        text = ok(cli(target, "credential", "list", "--json", *args))
        mine = [c for c in json.loads(text) if c["machine_type"] == name]
        assert sorted(c["login"] for c in mine) == sorted([issued["login"], "node7@rack2"])
        assert all(c["active"] and not c["config_managed"] for c in mine)
        for secret in (issued["password"], named["password"], "argon2"):
            assert secret not in text
    table = ok(cli(target, "credential", "list", "--machine-type", name))
    assert issued["password"] not in table
    row = next(r for r in table_rows(table) if r[1] == issued["login"])
    assert row[0] == issued["id"] and row[2] == name and row[4:] == ["never", "active"]
    assert cli_json(target, "machine-type", "show", name)["credentials"] == 2

    revoked = cli_json(target, "credential", "revoke", issued["id"])
    assert revoked["id"] == issued["id"] and revoked["active"] is False and revoked["revoked"]
    again = ok(cli(target, "credential", "revoke", named["id"]))
    assert table_rows(again)[0][1] == "node7@rack2" and table_rows(again)[0][-1] == "revoked"
    shown = cli_json(target, "machine-type", "show", name)
    assert shown["credentials"] == 0
    assert {c["login"]: c["active"] for c in shown["credential_list"]} == {
        issued["login"]: False,
        "node7@rack2": False,
    }


def test_credential_rotate_and_expire(target: list[str]) -> None:
    name = add_type(target)
    issued = cli_json(target, "credential", "create", name)
    rotated = cli_json(target, "credential", "rotate", issued["id"])
    assert rotated["id"] == issued["id"] and rotated["login"] == issued["login"]
    assert rotated["password"] != issued["password"]
    text = ok(cli(target, "credential", "rotate", issued["id"]))
    assert re.fullmatch(rf"login:    {issued['login']}\npassword: \S+  \(shown once\)\n", text)

    later = datetime.now(timezone(timedelta(hours=2))).replace(microsecond=0) + timedelta(days=1)
    future = cli_json(target, "credential", "expire", issued["id"], "--at", later.isoformat())
    assert datetime.fromisoformat(future["expires"]) == later and future["active"] is True
    expired = ok(cli(target, "credential", "expire", issued["id"]))
    assert table_rows(expired)[0][-1] == "expired"
    assert cli_json(target, "credential", "list", "--machine-type", name)[0]["active"] is False


def test_credential_expiry_at_creation(target: list[str]) -> None:
    name = add_type(target)
    day = (datetime.now(UTC) + timedelta(days=3)).date()
    issued = cli_json(target, "credential", "create", name, "--expires", day.isoformat())
    (listed,) = cli_json(target, "credential", "list", "--machine-type", name)
    assert listed["id"] == issued["id"]
    assert datetime.fromisoformat(listed["expires"]) == datetime(
        day.year, day.month, day.day, tzinfo=UTC
    )
    fails(cli(target, "credential", "create", name, "--expires", "2001-01-01"), "expires")
    fails(cli(target, "credential", "create", name, "--expires", "soon"), "soon")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["create", "{missing}"], ["{missing}", "does not exist"]),
        (["list", "--machine-type", "{missing}"], ["{missing}", "does not exist"]),
        (["revoke", "{missing}"], ["{missing}", "does not exist"]),
        (["rotate", "{missing}"], ["{missing}", "does not exist"]),
        (["expire", "{missing}"], ["{missing}", "does not exist"]),
        (["create", "{config}", "--login", "{config_login}"], ["{config_login}", "taken"]),
        (["create", "{config}", "--login", "a:b"], ["login"]),
        (["revoke", "{config_id}"], ["config file"]),
        (["rotate", "{config_id}"], ["config file"]),
    ],
)
def test_credential_errors(target: list[str], args: list[str], words: list[str]) -> None:
    (config_credential,) = cli_json(
        target, "credential", "list", "--machine-type", CONFIG_TYPE["name"]
    )
    names = {
        "missing": unique("missing"),
        "config": CONFIG_TYPE["name"],
        "config_login": CONFIG_TYPE["login"],
        "config_id": config_credential["id"],
    }
    result = cli(target, "credential", *[a.format(**names) for a in args])
    fails(result, *[w.format(**names) for w in words])


# -- admins -----------------------------------------------------------------------------------


def test_admin_create_list_tokens_delete(target: list[str]) -> None:
    login = unique("ops")
    line = ok(cli(target, "admin", "create", "--login", login, "--password-stdin", stdin=PASSWORD))
    match = re.fullmatch(rf"admin {login} created; API token \(shown once\): (mha_\S+)\n", line)
    assert match, line
    assert login in ok(cli(target, "admin", "list")).splitlines()
    assert login in cli_json(target, "admin", "list")

    token = cli_json(target, "admin token", "create", login, "--name", "laptop")
    assert token["login"] == login and token["token"].startswith("mha_")
    listed = cli_json(target, "admin token", "list", login)
    assert [t["name"] for t in listed] == ["cli", "laptop"]
    assert all(t["admin"] == login and t["revoked"] is None for t in listed)
    table = ok(cli(target, "admin token", "list", login))
    assert match.group(1) not in table and token["token"] not in table
    assert [row[2] for row in table_rows(table)] == ["cli", "laptop"]

    ok(cli(target, "admin token", "revoke", token["id"]))
    states = {
        t["name"]: t["revoked"] is not None for t in cli_json(target, "admin token", "list", login)
    }
    assert states == {"cli": False, "laptop": True}
    fails(cli(target, "admin token", "revoke", token["id"]), token["id"])

    fails(
        cli(target, "admin", "create", "--login", login, "--password-stdin", stdin=PASSWORD),
        "already exists",
    )
    assert ok(cli(target, "admin", "delete", login, "--yes")) == f"deleted admin {login}\n"
    assert login not in cli_json(target, "admin", "list")
    fails(cli(target, "admin", "delete", login, "--yes"), login, "does not exist")
    fails(cli(target, "admin token", "list", login), login, "does not exist")


def test_admin_create_prompts_for_the_password(target: list[str]) -> None:
    login = unique("ops")
    prompted = metahub(
        "admin",
        "create",
        *target,
        "--login",
        login,
        stdin=f"{PASSWORD}\n{PASSWORD}\n",
        process=True,
    )
    assert ok(prompted).startswith(f"admin {login} created;")
    assert PASSWORD not in prompted.stdout + prompted.stderr
    assert "password" in prompted.stderr  # the prompt, where it does not mix with the output
    mismatch = metahub(
        "admin", "create", *target, "--login", unique("ops"), stdin="one\ntwo\n", process=True
    )
    assert mismatch.returncode != 0
    assert "do not match" in mismatch.stdout + mismatch.stderr
    short = cli(
        target, "admin", "create", "--login", unique("ops"), "--password-stdin", stdin="short"
    )
    fails(short, "password", "12")


def test_admin_create_json(target: list[str]) -> None:
    login = unique("ops")
    issued = json.loads(
        ok(
            cli(
                target,
                "admin",
                "create",
                "--login",
                login,
                "--password-stdin",
                "--json",
                stdin=PASSWORD,
            )
        )
    )
    assert issued["login"] == login and issued["token"].startswith("mha_") and issued["id"]


# -- on the server: what the commands did is what the registry does ----------------------------


def pull(server: MetaHubServer, login: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        issued = client.get(
            "/token",
            params={"service": "metahub", "scope": "repository:qnib/bench:pull"},
            auth=(login, password),
        )
        if issued.status_code != 200:
            return issued
        return client.get(
            "/v2/qnib/bench/manifests/latest",
            headers={"authorization": f"Bearer {issued.json()['token']}", "accept": ACCEPT_INDEX},
        )


def test_remote_commands_take_effect_on_the_registry(server: MetaHubServer) -> None:
    target = ["--server", server.url, "--token", ADMIN_TOKEN]
    name = add_type(target, "cpu:skylake")
    issued = cli_json(target, "credential", "create", name)
    pulled = pull(server, issued["login"], issued["password"])
    assert pulled.status_code == 200, pulled.text
    skylake = [m["platform"].get("features") for m in pulled.json()["manifests"]]
    assert skylake == [["cpu:skylake"], None]

    cli_json(target, "machine-type", "update", name, "--feature", "cpu:broadwell")
    changed = pull(server, issued["login"], issued["password"])
    assert [m["platform"].get("features") for m in changed.json()["manifests"]] == [
        ["cpu:broadwell"],
        None,
    ]
    rotated = cli_json(target, "credential", "rotate", issued["id"])
    assert pull(server, issued["login"], issued["password"]).status_code == 401
    assert pull(server, rotated["login"], rotated["password"]).status_code == 200
    cli_json(target, "credential", "revoke", issued["id"])
    assert pull(server, rotated["login"], rotated["password"]).status_code == 401


def test_remote_admin_token_from_the_cli_opens_the_api(server: MetaHubServer) -> None:
    target = ["--server", server.url, "--token", ADMIN_TOKEN]
    login = unique("ops")
    made = json.loads(
        ok(
            cli(
                target,
                "admin",
                "create",
                "--login",
                login,
                "--password-stdin",
                "--json",
                stdin=PASSWORD,
            )
        )
    )
    own = ["--server", server.url, "--token", made["token"]]
    assert cli_json(own, "machine-type", "list")
    ok(cli(target, "admin token", "revoke", made["id"]))
    fails(cli(own, "machine-type", "list"), "admin token")


class NotMetaHub(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html><body>a web page</body></html>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def web_page() -> Iterator[str]:
    """A server that answers every GET with an HTML page."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotMetaHub)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_remote_errors_are_clear(server: MetaHubServer, web_page: str) -> None:
    wrong = ("machine-type", "list", "--server", server.url, "--token", "wrong-token")
    fails(metahub(*wrong, process=True), server.url, "admin token")
    fails(metahub("machine-type", "list", "--server", server.url), "--token")
    fails(metahub("machine-type", "list"), "--config", "--server")
    not_the_api = metahub("machine-type", "list", "--server", web_page, "--token", "x")
    fails(not_the_api, web_page, "text/html", "not MetaHub's management API")
    nothing_there = metahub("machine-type", "list", "--server", server.url + "/x", "--token", "x")
    fails(nothing_there, "nothing at /x/api/v1/machine-types")
    with_slash = metahub(
        "machine-type", "list", "--json", "--server", server.url + "/", "--token", ADMIN_TOKEN
    )
    assert json.loads(ok(with_slash))
    closed = ("machine-type", "list", "--server", "http://127.0.0.1:1", "--token", "x")
    fails(metahub(*closed, process=True), "cannot reach http://127.0.0.1:1")


def test_names_are_one_path_segment(server: MetaHubServer) -> None:
    """A name with '/' or '?' cannot reach another route of the API."""
    target = ["--server", server.url, "--token", ADMIN_TOKEN]
    fails(cli(target, "machine-type", "show", f"{CONFIG_TYPE['name']}/credentials"), "'/'")
    fails(cli(target, "credential", "revoke", "../machine-types"), "'/'")
    query = f"{CONFIG_TYPE['name']}?x=1"
    fails(cli(target, "machine-type", "delete", query, "--yes"), query, "does not exist")
    assert cli_json(target, "machine-type", "show", CONFIG_TYPE["name"])["config_managed"]


def test_local_errors_are_clear(tmp_path: Path, config_file: Path) -> None:
    fails(metahub("machine-type", "list", "--config", str(tmp_path / "none.yaml")), "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"upstream": {"path": "x"}, "colour": "red"}))
    fails(metahub("machine-type", "list", "--config", str(bad)), "colour")
    unreachable = tmp_path / "pg.yaml"
    unreachable.write_text(
        yaml.safe_dump(
            {
                "upstream": {"path": "x"},
                "database": {"url": "postgresql+asyncpg://u:p@127.0.0.1:1/db"},
            }
        )
    )
    fails(metahub("machine-type", "list", "--config", str(unreachable), process=True), "database")


def test_config_may_come_before_the_command(config_file: Path) -> None:
    listed = json.loads(ok(metahub("--config", str(config_file), "machine-type", "list", "--json")))
    assert CONFIG_TYPE["name"] in [row["name"] for row in listed]


# -- from nothing but the CLI ---------------------------------------------------------------


def test_an_operator_starts_from_nothing_but_the_cli(workdir: Path, layout: Path) -> None:
    """Admin, machine type and login made with the CLI on the database; then the server runs."""
    data = workdir / "from-nothing"
    config = workdir / "from-nothing.yaml"
    config.write_text(yaml.safe_dump({"upstream": {"path": str(layout)}, "data_dir": str(data)}))
    local = ["--config", str(config)]
    made = json.loads(
        ok(
            cli(
                local,
                "admin",
                "create",
                "--login",
                "ops",
                "--password-stdin",
                "--json",
                stdin=PASSWORD,
            )
        )
    )
    cli_json(
        local, "machine-type", "add", "gpu", "--feature", "cpu:broadwell", "--feature", "nvcap:5.2"
    )
    issued = cli_json(local, "credential", "create", "gpu")
    (workdir / "from-nothing-server").mkdir()
    with MetaHubServer(
        workdir / "from-nothing-server", {"upstream": {"path": str(layout)}, "data_dir": str(data)}
    ) as server:
        pulled = pull(server, issued["login"], issued["password"])
        assert pulled.status_code == 200, pulled.text
        features = [m["platform"].get("features") for m in pulled.json()["manifests"]]
        assert features == [["cpu:broadwell", "nvcap:5.2"], None]
        remote = ["--server", server.url, "--token", made["token"]]
        assert [t["name"] for t in cli_json(remote, "machine-type", "list")] == ["gpu"]
        with httpx.Client(base_url=server.url) as client:
            basic = base64.b64encode(f"{issued['login']}:{issued['password']}".encode()).decode()
            api = client.get("/api/v1/machine-types", headers={"authorization": f"Basic {basic}"})
            assert api.status_code == 401


# -- the README's example -------------------------------------------------------------------


def readme_example() -> list[tuple[str, list[str]]]:
    """(command, the lines shown after it) from the README's management console example."""
    text = README.read_text()
    section = text[text.index("## Managing machine types without editing YAML") :]
    block = section[section.index("```console\n") + len("```console\n") :]
    block = block[: block.index("```")]
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


def normalised(lines: list[str]) -> list[str]:
    """What differs between runs: secrets, ids, times."""
    out = []
    for line in lines:
        line = re.sub(r"mha_\S+", "mha_...", line)
        line = re.sub(r"^password: \S+  ", "password: ...  ", line)
        line = re.sub(r"\b[0-9a-f]{16}\b", "<id>", line)
        line = re.sub(r"\ba100-[0-9a-f]{8}\b", "a100-<random>", line)
        line = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", "<time>", line)
        out.append(line.rstrip())
    return out


def test_readme_example_is_what_the_cli_prints(
    tmp_path: Path, layout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = {"upstream": {"path": str(layout)}, "data_dir": "data"}
    Path("metahub.yaml").write_text(yaml.safe_dump(config))
    steps = readme_example()
    assert [shlex.split(command)[:3] for command, _ in steps] == [
        ["metahub", "admin", "create"],
        ["metahub", "machine-type", "add"],
        ["metahub", "credential", "create"],
        ["metahub", "credential", "revoke"],
        ["metahub", "explain", "--config"],
    ]
    (tmp_path / "server").mkdir()
    served = {"upstream": {"path": str(layout)}, "data_dir": str(tmp_path / "data")}
    with MetaHubServer(tmp_path / "server", served) as server:
        substitutions: dict[str, str] = {"https://metahub.example.org": server.url}
        for command, shown in steps:
            args = [substitutions.get(word, word) for word in shlex.split(command)[1:]]
            stdin = f"{PASSWORD}\n{PASSWORD}\n" if args[:2] == ["admin", "create"] else None
            output = ok(metahub(*args, stdin=stdin))
            if args[:2] == ["admin", "create"]:
                substitutions["mha_..."] = re.findall(r"mha_\S+", output)[0]
            if args[:2] == ["credential", "create"]:
                example_id = re.findall(r"^id: +(\S+)$", "\n".join(shown), re.M)[0]
                substitutions[example_id] = re.findall(r"^id: +(\S+)$", output, re.M)[0]
            if shown:
                assert normalised(output.splitlines()) == normalised(shown), command
            else:
                assert "a100" in output  # the README shows no output for this one
        assert registry_token(server, "ops", PASSWORD).status_code == 401


def registry_token(server: MetaHubServer, login: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        return client.get("/token", params={"service": "metahub"}, auth=(login, password))


def test_config_login_taken_in_the_database_is_a_clear_error(tmp_path: Path, layout: Path) -> None:
    data = tmp_path / "data"
    before = tmp_path / "before.yaml"
    before.write_text(yaml.safe_dump({"upstream": {"path": str(layout)}, "data_dir": str(data)}))
    cli_json(["--config", str(before)], "machine-type", "add", "db-type")
    cli_json(["--config", str(before)], "credential", "create", "db-type", "--login", "shared")

    clash = {
        "upstream": {"path": str(layout)},
        "data_dir": str(data),
        "machine_types": [{"name": "cfg-type", "login": "shared", "password": "pw"}],
    }
    after = tmp_path / "after.yaml"
    after.write_text(yaml.safe_dump(clash))
    fails(
        metahub("machine-type", "list", "--config", str(after), process=True),
        "login 'shared' of 'cfg-type'",
        "machine type 'db-type'",
        "another login",
    )
    (tmp_path / "server").mkdir()
    with pytest.raises(RuntimeError, match="give the config another login"):
        MetaHubServer(tmp_path / "server", clash).start()
    # Nothing was changed by the refused import.
    (listed,) = cli_json(["--config", str(before)], "credential", "list")
    assert (listed["login"], listed["machine_type"]) == ("shared", "db-type")
    assert [t["name"] for t in cli_json(["--config", str(before)], "machine-type", "list")] == [
        "db-type"
    ]

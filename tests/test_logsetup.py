"""`--log-level debug` logs MetaHub's workings, never the SQL parameters it stores: password
hashes and token hashes. METAHUB_SQL_DEBUG=1 asks for them, for debugging the database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from metahub.management.service import token_hash

LOGIN = "log-check-admin"
PASSWORD = "a password for the log check"


def create_admin_at_debug_level(tmp_path: Path, **env: str) -> tuple[str, str]:
    """(the admin's API token, stderr) of `metahub --log-level debug admin create`."""
    config = tmp_path / "metahub.yaml"
    config.write_text(yaml.safe_dump({"upstream": {"path": "layout"}, "data_dir": "data"}))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("METAHUB_")}
    command = ["--log-level", "debug", "admin", "create", "--config", str(config)]
    done = subprocess.run(
        [sys.executable, "-m", "metahub", *command, "--login", LOGIN, "--password-stdin", "--json"],
        input=PASSWORD,
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["token"], done.stderr


def test_a_debug_run_logs_no_sql_parameters(tmp_path: Path):
    token, log = create_admin_at_debug_level(tmp_path)
    assert " DEBUG " in log  # debug logging is on
    assert "$argon2" not in log
    assert token_hash(token) not in log
    assert LOGIN not in log


def test_sql_debug_logs_them_when_asked(tmp_path: Path):
    """The check above would see parameters in the log: here they are."""
    token, log = create_admin_at_debug_level(tmp_path, METAHUB_SQL_DEBUG="1")
    assert "$argon2" in log
    assert token_hash(token) in log

"""The hub that the management API and web UI tests share, and the secrets to manage it with.

It serves the demo's OCI layout (qnib/bench:latest: amd64 cpu:broadwell, cpu:skylake, generic
and cpu:broadwell+nvcap:5.2 builds, and an arm64 generic one) with one machine type from the
config, an admin token from the config, and an admin made with `metahub admin create`, as an
operator would. The `admin_hub` fixture (tests/support/fixtures.py) starts it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.inprocess import InProcessHub
from tests.support.metahub_server import MetaHubServer

ADMIN = "ops"
ADMIN_PASSWORD = "correct horse battery staple"
ADMIN_TOKEN = "admin-token-for-api-tests"
CONFIG_TYPE = {
    "name": "config-type",
    "login": "config-login",
    "password": "config-password",
    "features": ["cpu:broadwell"],
}
IMAGE = "qnib/bench:latest"

# A hub in this process, or `metahub serve` for the tests that need real sockets (a browser).
Hub = InProcessHub | MetaHubServer


def admin_hub_config(layout: Path, **extra: Any) -> dict[str, Any]:
    return {
        "upstream": {"path": str(layout)},
        "machine_types": [CONFIG_TYPE],
        "admin": {"tokens": [ADMIN_TOKEN]},
        **extra,
    }

"""Entry point for uvicorn workers: the config file is named by METAHUB_CONFIG."""

from __future__ import annotations

import os
from pathlib import Path

from metahub.config import load_config
from metahub.server.app import MetaHubApp

CONFIG_ENV = "METAHUB_CONFIG"


def create_app() -> MetaHubApp:
    return MetaHubApp(load_config(Path(os.environ[CONFIG_ENV])))

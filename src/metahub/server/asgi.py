"""Entry point for uvicorn workers: the config file is named by METAHUB_CONFIG."""

from __future__ import annotations

import os
from pathlib import Path

from metahub.config import load_config
from metahub.logsetup import setup_logging
from metahub.server.app import build_app
from metahub.server.observe import Observe

CONFIG_ENV = "METAHUB_CONFIG"


def create_app() -> Observe:
    settings = load_config(Path(os.environ[CONFIG_ENV]))
    # Each worker is a fresh process: logging is set up here, not inherited.
    setup_logging(settings.log.level)
    return build_app(settings)

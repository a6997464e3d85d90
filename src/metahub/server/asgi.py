"""Entry point for uvicorn workers: the config file is named by METAHUB_CONFIG."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from metahub.config import load_config
from metahub.server.app import build_app
from metahub.server.observe import Observe

CONFIG_ENV = "METAHUB_CONFIG"


def create_app() -> Observe:
    settings = load_config(Path(os.environ[CONFIG_ENV]))
    # Each worker is a fresh process: logging is set up here, not inherited.
    logging.basicConfig(
        level=settings.log.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The format above shows no thread or process: records are made without looking them up
    # (the access log has a buffered writer of its own, server/accesslog.py).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    return build_app(settings)

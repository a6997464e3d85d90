"""Logging for the `metahub` command and for each server worker: one format, no SQL parameters."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SQL_DEBUG_ENV = "METAHUB_SQL_DEBUG"
# Below WARNING these log each statement with its parameters: password hashes, token hashes.
SQL_LOGGERS = ("sqlalchemy", "aiosqlite", "asyncpg")


def setup_logging(level: str, env: Mapping[str, str] = os.environ) -> None:
    """Log at `level` to stderr; SQL only when METAHUB_SQL_DEBUG=1 asks for it."""
    logging.basicConfig(level=level.upper(), format=FORMAT)
    # The format shows no thread or process: records are made without looking them up
    # (the access log has a buffered writer of its own, server/accesslog.py).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    sql_level = level.upper() if env.get(SQL_DEBUG_ENV) == "1" else logging.WARNING
    for name in SQL_LOGGERS:
        logging.getLogger(name).setLevel(sql_level)


class _CutResponses(logging.Filter):
    """Drops uvicorn's ERROR for a response the application ends early on purpose.

    MetaHub cuts a blob download whose upstream broke off or whose bytes do not verify, so that
    no client completes a wrong or short blob; it logs one warning naming the upstream and the
    blob. uvicorn then adds an ERROR line without context for the same event.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing response."


_CUT_RESPONSES = _CutResponses()


def quiet_cut_responses() -> None:
    """Install the filter on uvicorn's error logger (after uvicorn has configured logging)."""
    logger = logging.getLogger("uvicorn.error")
    if _CUT_RESPONSES not in logger.filters:
        logger.addFilter(_CUT_RESPONSES)

"""A database that does not answer (locked, restarting, unreachable) is the service's trouble,
not a bug: every surface answers `503 UNAVAILABLE` naming the database, logged as one line."""

from __future__ import annotations

import logging

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from metahub import errors
from metahub.hub import Hub
from metahub.store.digests import database_description

log = logging.getLogger("metahub.server")
# What a database that does not answer raises; a pool with no free connection included.
DATABASE_ERRORS = (DBAPIError, PoolTimeout)


def is_unavailable(exc: BaseException) -> bool:
    """A database failure, not a conflict in the data (those are the service's to answer)."""
    return isinstance(exc, DATABASE_ERRORS) and not isinstance(exc, IntegrityError)


def database_unavailable(
    exc: BaseException, hub: Hub, method: str, path: str
) -> errors.DatabaseUnavailable:
    """The client's answer, and the operator's warning: one line, no traceback."""
    description = database_description(hub.engine)
    reason = (str(getattr(exc, "orig", None) or exc).splitlines() or [type(exc).__name__])[0]
    log.warning(
        "%s %s: MetaHub's database (%s) did not answer: %s", method, path, description, reason
    )
    return errors.DatabaseUnavailable(
        f"MetaHub's database ({description}) did not answer; try again shortly",
        detail={"database": description},
    )

"""The data directory is private to the user MetaHub runs as.

It holds the database, and the database the token-signing key: whoever reads it can sign tokens
MetaHub accepts. So the directory is 0700, the files in it 0600, and the process umask keeps
files made later (SQLite's WAL and SHM, new databases) the same.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
_OPEN_TO_OTHERS = stat.S_IRWXG | stat.S_IRWXO


def secure_data_dir(path: Path) -> list[str]:
    """Set the private umask, make `path` (0700) or tighten it and the files in it.

    An existing directory or file that group or others could reach is tightened with a logged
    warning naming it and its old mode; the warnings are returned too. Links and subdirectories
    inside are left alone: the directory's own mode already closes them to others.
    """
    os.umask(PRIVATE_UMASK)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    warnings = [w for w in [_tighten(path, 0o700)] if w]
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                warning = _tighten(Path(entry.path), 0o600)
                if warning:
                    warnings.append(warning)
    for warning in warnings:
        log.warning("%s", warning)
    return warnings


def _tighten(path: Path, private_mode: int) -> str | None:
    try:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if not mode & _OPEN_TO_OTHERS:
            return None
        tightened = mode & private_mode
        path.chmod(tightened)
    except FileNotFoundError:  # removed meanwhile (SQLite ends its WAL file on close)
        return None
    return (
        f"{path} was open to other users (mode {mode:04o}), now {tightened:04o}: "
        "the data directory holds the token-signing key"
    )

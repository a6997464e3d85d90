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
    warning naming it and its old mode; the warnings are returned too. One that cannot be
    tightened (owned by another user, or a shared directory such as /tmp) is left as it is,
    with a warning: MetaHub still starts. Links and subdirectories inside are left alone: the
    directory's own mode already closes them to others.
    """
    os.umask(PRIVATE_UMASK)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    warnings: list[str] = []
    if path.stat().st_mode & stat.S_ISVTX:
        # Sticky: a directory every user writes in. Closing it would break the others.
        warnings.append(
            f"{path} is a shared directory (sticky bit) and is not made private: "
            "give MetaHub a data directory of its own, as it holds the token-signing key"
        )
    else:
        warnings += _tightened(path)
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    warnings += _tightened(Path(entry.path))
    for warning in warnings:
        log.warning("%s", warning)
    return warnings


def _tightened(path: Path) -> list[str]:
    """Group and other permissions taken from `path`; a warning for each one that had any."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:  # removed meanwhile (SQLite ends its WAL file on close)
        return []
    if not mode & _OPEN_TO_OTHERS:
        return []
    private = mode & ~_OPEN_TO_OTHERS
    try:
        path.chmod(private)
    except FileNotFoundError:
        return []
    except PermissionError as exc:
        return [
            f"{path} is open to other users (mode {mode:04o}) and cannot be made private "
            f"({exc.strerror}): the data directory holds the token-signing key"
        ]
    return [
        f"{path} was open to other users (mode {mode:04o}), now {private:04o}: "
        "the data directory holds the token-signing key"
    ]

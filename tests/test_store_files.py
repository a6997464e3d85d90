"""The data directory is private: the database in it holds the token-signing key."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from metahub.store.files import secure_data_dir


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(autouse=True)
def umask_restored() -> Iterator[None]:
    """secure_data_dir sets the process umask: put it back for the tests that follow."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_a_new_data_directory_is_made_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    assert secure_data_dir(data_dir) == []
    assert mode_of(data_dir) == 0o700


def test_files_made_after_start_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    secure_data_dir(data_dir)
    (data_dir / "metahub.db").write_bytes(b"")
    (data_dir / "sub").mkdir()
    assert mode_of(data_dir / "metahub.db") == 0o600
    assert mode_of(data_dir / "sub") == 0o700


def test_an_open_directory_and_its_files_are_tightened_with_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o755)
    for name in ("metahub.db", "metahub.db-wal", "metahub.db-shm"):
        (data_dir / name).write_bytes(b"x")
        (data_dir / name).chmod(0o644)
    (data_dir / "private").write_bytes(b"x")
    (data_dir / "private").chmod(0o600)

    with caplog.at_level(logging.WARNING, logger="metahub.store.files"):
        warnings = secure_data_dir(data_dir)

    assert mode_of(data_dir) == 0o700
    for name in ("metahub.db", "metahub.db-wal", "metahub.db-shm", "private"):
        assert mode_of(data_dir / name) == 0o600
    assert len(warnings) == 4
    assert any(str(data_dir) in w and "0755" in w for w in warnings)
    assert any(str(data_dir / "metahub.db-wal") in w and "0644" in w for w in warnings)
    assert not any(str(data_dir / "private") in w for w in warnings)
    assert [r.getMessage() for r in caplog.records] == warnings


def test_an_already_private_directory_gives_no_warning(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    (data_dir / "metahub.db").write_bytes(b"x")
    (data_dir / "metahub.db").chmod(0o600)
    assert secure_data_dir(data_dir) == []


def test_group_or_other_access_of_any_kind_is_taken_away(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o710)
    (data_dir / "key").write_bytes(b"x")
    (data_dir / "key").chmod(0o602)
    assert len(secure_data_dir(data_dir)) == 2
    assert mode_of(data_dir) == 0o700
    assert mode_of(data_dir / "key") == 0o600


def test_links_and_subdirectories_are_left_alone(tmp_path: Path) -> None:
    """A link may point anywhere; subdirectories (the blob cache) are guarded by the data
    directory and by their own owners."""
    outside = tmp_path / "outside"
    outside.write_bytes(b"x")
    outside.chmod(0o644)
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    (data_dir / "link").symlink_to(outside)
    (data_dir / "blobs").mkdir()
    (data_dir / "blobs").chmod(0o755)
    assert secure_data_dir(data_dir) == []
    assert mode_of(outside) == 0o644
    assert mode_of(data_dir / "blobs") == 0o755


def test_a_shared_sticky_directory_is_left_open_with_a_warning(tmp_path: Path) -> None:
    """data_dir: /tmp by mistake must not close /tmp to every other user."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "someone-elses").write_bytes(b"x")
    (shared / "someone-elses").chmod(0o644)
    (warning,) = secure_data_dir(shared)
    assert str(shared) in warning and "sticky" in warning
    assert mode_of(shared) == 0o1777
    assert mode_of(shared / "someone-elses") == 0o644


def test_what_cannot_be_tightened_is_warned_about_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A volume owned by another user (a Kubernetes fsGroup mount): MetaHub still starts."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o2775)

    def refused(self: Path, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted", str(self))

    monkeypatch.setattr(Path, "chmod", refused)
    (warning,) = secure_data_dir(data_dir)
    assert str(data_dir) in warning and "2775" in warning and "cannot" in warning


def test_special_bits_are_kept_while_tightening(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o2775)  # setgid: new files take the directory's group
    assert len(secure_data_dir(data_dir)) == 1
    assert mode_of(data_dir) == 0o2700

"""A real PostgreSQL server (Debian `postgresql`) in a temp dir on loopback.

PostgreSQL refuses to run as root, so `initdb` and `postgres` run as the `postgres` system user
(made by the Debian package) through `setpriv`, which execs in place: the process the test
holds is the postmaster itself. The cluster lives in a short dir under /tmp owned by that user
(pytest's temp dirs are private to root); the log stays with the test's temp dir. Durability
is traded for speed (`fsync=off`): the cluster is thrown away when the server stops.

Clients log in over TCP on 127.0.0.1 with a password (SCRAM), as a deployment would; the unix
socket (trust) is only used here, to create databases.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import signal
import subprocess
from pathlib import Path

from tests.support.servers import (
    _PACKAGES,
    MissingBinaryError,
    ServerError,
    _Daemon,
    _run,
    free_port,
    require,
)

POSTGRES_ROOT = Path("/usr/lib/postgresql")
SETPRIV = "/usr/bin/setpriv"
SYSTEM_USER = "postgres"
_PACKAGES[SETPRIV] = "util-linux"


def postgres_bin_dir() -> Path:
    """The bin dir of the newest PostgreSQL installed (`/usr/lib/postgresql/<version>/bin`)."""
    versions = sorted(
        (path for path in POSTGRES_ROOT.glob("*/bin") if (path / "postgres").is_file()),
        key=lambda path: [int(part) for part in re.findall(r"\d+", path.parent.name)] or [0],
    )
    if not versions:
        raise MissingBinaryError(
            f"no PostgreSQL server under {POSTGRES_ROOT} (Debian package postgresql); "
            "run `scripts/install-system-deps.sh test` as root"
        )
    bin_dir = versions[-1]
    for tool in ("initdb", "postgres", "pg_isready", "createdb"):
        _PACKAGES[str(bin_dir / tool)] = "postgresql"
    return bin_dir


class PostgresServer(_Daemon):
    """`postgres` on 127.0.0.1:<free port> with one superuser and a database for each caller.

    `url` is the default database's `postgresql+asyncpg://` URL; `create_database(name)` makes
    another (a fresh schema per test) and returns its URL.
    """

    name = "postgres"
    user = "metahub"
    password = "metahub-test-password"
    database = "metahub"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.bin_dir = postgres_bin_dir()
        self.port = free_port()
        self.host = "127.0.0.1"
        self.data_dir: Path | None = None
        try:
            entry = pwd.getpwnam(SYSTEM_USER)
        except KeyError as error:
            raise MissingBinaryError(
                f"no {SYSTEM_USER!r} system user (made by the Debian package postgresql)"
            ) from error
        self._uid, self._gid = entry.pw_uid, entry.pw_gid

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        return (
            f"postgresql+asyncpg://{self.user}:{self.password}@{self.host}:{self.port}/{database}"
        )

    def _as_postgres(self, binary: str, *args: str) -> list[str]:
        require(SETPRIV)
        require(binary)
        ids = (f"--reuid={self._uid}", f"--regid={self._gid}", "--clear-groups")
        return [SETPRIV, *ids, "--", binary, *args]

    def _tool(self, name: str) -> str:
        return str(self.bin_dir / name)

    def start(self) -> None:
        run_dir = self._make_run_dir()
        os.chown(run_dir, self._uid, self._gid)
        self.data_dir = run_dir / "data"
        if not self.data_dir.exists():
            self._initdb(run_dir)
        argv = self._as_postgres(
            self._tool("postgres"),
            "-D", str(self.data_dir),
            "-c", f"listen_addresses={self.host}",
            "-c", f"port={self.port}",
            "-c", f"unix_socket_directories={run_dir}",
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
            "-c", "max_connections=200",
        )  # fmt: skip
        self._spawn(argv, self._answers, timeout=60)
        self.create_database(self.database)

    def _initdb(self, run_dir: Path) -> None:
        password_file = run_dir / "password"
        password_file.write_text(self.password + "\n")
        os.chown(password_file, self._uid, self._gid)
        argv = self._as_postgres(
            self._tool("initdb"),
            "-D", str(self.data_dir),
            "-U", self.user,
            f"--pwfile={password_file}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        )  # fmt: skip
        with self.log_path.open("ab") as log:
            result = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=120
            )
        password_file.unlink()
        if result.returncode != 0:
            raise ServerError(f"initdb exited with {result.returncode}:\n{self.log_tail()}")

    def _answers(self) -> bool:
        assert self.run_dir is not None
        argv = [require(self._tool("pg_isready")), "-q", "-h", str(self.run_dir)]
        argv += ["-p", str(self.port), "-U", self.user, "-d", "postgres"]
        return _run(argv, check=False, timeout=10).returncode == 0

    def create_database(self, name: str) -> str:
        """Create database `name` (owned by the superuser) and return its URL."""
        if self.run_dir is None:
            raise ServerError("postgres is not started")
        argv = [require(self._tool("createdb")), "-h", str(self.run_dir), "-p", str(self.port)]
        _run([*argv, "-U", self.user, name], check=True, timeout=30)
        return self.url_for(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT: sessions are ended, not waited for), then the usual stop."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(20)
        super().stop()


__all__ = ["PostgresServer", "postgres_bin_dir"]

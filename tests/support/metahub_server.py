"""Run a real `metahub serve` process on loopback for integration and end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


ADMIN_CREATE = [sys.executable, "-m", "metahub", "admin", "create"]


def create_admin(config_path: Path, login: str, password: str) -> None:
    """`metahub admin create`, as an operator runs it, on the config's database."""
    done = subprocess.run(
        [*ADMIN_CREATE, "--config", str(config_path), "--login", login, "--password-stdin"],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0 or f"admin {login} created" not in done.stdout:
        raise RuntimeError(f"metahub admin create failed:\n{done.stdout}{done.stderr}")


class MetaHubServer:
    """`metahub serve` in a subprocess with a config written from a dict."""

    def __init__(self, tmp: Path, config: dict[str, Any], *, workers: int = 1) -> None:
        self.tmp = tmp
        self.config = {"data_dir": str(tmp / "data"), **config}
        self.workers = workers
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.log_path = tmp / "metahub.log"
        self.config_path = tmp / "metahub.yaml"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config))
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "metahub",
                "serve",
                "--config",
                str(self.config_path),
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"metahub exited early:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"metahub did not listen within 30 s:\n{self.log()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def create_admin(self, login: str, password: str) -> None:
        """`metahub admin create` on this server's own config and database."""
        create_admin(self.config_path, login, password)

    def client(self, **options: Any) -> httpx.Client:
        """A client of this server over real sockets."""
        options.setdefault("base_url", self.url)
        options.setdefault("timeout", 60)
        return httpx.Client(**options)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def __enter__(self) -> MetaHubServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

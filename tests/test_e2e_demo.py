"""`metahub demo`, as `make demo` runs it: the announced commands work with a real docker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from metahub.demo.images import AMD64_VARIANTS
from tests.support.servers import Dockerd, free_port

pytestmark = pytest.mark.e2e

MESSAGES = {variant.tag: variant.message for variant in AMD64_VARIANTS}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    data = tmp_path_factory.mktemp("demo")
    port = free_port()
    log = data / "demo.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "metahub", "demo", "--port", str(port), "--data-dir", str(data)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while "Press Ctrl+C" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield f"127.0.0.1:{port}", log.read_text()
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, log.read_text()


def test_demo_announces_the_commands_to_try(demo: tuple[str, str]):
    host, announced = demo
    for login in ("qnib-type1", "qnib-type2", "qnib-type3", "qnib-type4"):
        assert f"docker login -u {login} -p {login} {host}" in announced
    assert f"docker run --rm --pull=always {host}/qnib/bench" in announced


@pytest.mark.parametrize(
    ("login", "tag"),
    [
        ("qnib-type1", "cpu-broadwell"),
        ("qnib-type2", "cpu-skylake"),
        ("qnib-type3", "cpu-skylake"),
        ("qnib-type4", "cpu_broadwell-nvcap_52"),
    ],
)
def test_announced_commands_give_the_seed_table(
    demo: tuple[str, str], dockerd: Dockerd, tmp_path: Path, login: str, tag: str
):
    host, _ = demo
    dockerd.login(host, login, login, tmp_path).check_returncode()
    result = dockerd.run(f"{host}/qnib/bench", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == MESSAGES[tag]

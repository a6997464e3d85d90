"""An upstream that trickles a blob out a byte at a time, each byte in time for the read timeout.

Below the minimum rate the download ends: the client sees a short transfer (never a complete
one) and the log one warning naming the upstream and the blob. A stopping server waits for such
a download at most `server.shutdown_timeout` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.metahub_server import MetaHubServer
from tests.support.scripted_registry import Blob, ScriptedRegistry


@pytest.fixture
def upstream() -> Iterator[ScriptedRegistry]:
    with ScriptedRegistry() as server:
        yield server


def hub_config(upstream: ScriptedRegistry, **settings: object) -> dict[str, object]:
    return {
        "upstream": {"url": upstream.url, "read_timeout": 10, **settings},
        "anonymous": {"unfiltered": True},
    }


def test_a_blob_below_the_minimum_rate_is_cut_short(
    tmp_path: Path, upstream: ScriptedRegistry
) -> None:
    blob = upstream.add_blob(Blob(b"x" * 2000, trickle=0.01))  # ~100 bytes/s at best
    config = hub_config(upstream, min_rate=10_000, min_rate_window=1)
    received = bytearray()
    started = time.monotonic()
    with (
        MetaHubServer(tmp_path, config) as hub,
        httpx.Client(base_url=hub.url, timeout=30) as client,
    ):
        try:
            with client.stream("GET", f"/v2/slow/blobs/{blob.digest}") as response:
                assert response.status_code == 200
                assert response.headers["Content-Length"] == "2000"
                for chunk in response.iter_raw():
                    received += chunk
        except httpx.HTTPError:
            pass  # the break comes mid-body: what arrived is checked below
        elapsed = time.monotonic() - started
        log = hub.log()
    assert len(received) < 2000
    assert elapsed < 15
    warnings = [line for line in log.splitlines() if "slower than" in line]
    assert len(warnings) == 1, log
    assert upstream.url in warnings[0]
    assert f"/v2/slow/blobs/{blob.digest}" in warnings[0]
    assert "Traceback" not in log


@pytest.mark.xfail(
    strict=True,
    reason="wired by the integrator: serve passes server.shutdown_timeout to uvicorn",
)
def test_stopping_waits_for_a_trickling_download_only_the_shutdown_timeout(
    tmp_path: Path, upstream: ScriptedRegistry
) -> None:
    blob = upstream.add_blob(Blob(b"x" * 1000, trickle=1.0))
    config = {**hub_config(upstream), "server": {"shutdown_timeout": 2}}
    first_byte = threading.Event()

    def download(url: str) -> None:
        try:
            with httpx.stream("GET", f"{url}/v2/slow/blobs/{blob.digest}", timeout=60) as answer:
                for _chunk in answer.iter_raw():
                    first_byte.set()
        except httpx.HTTPError:
            pass  # cut off by the stopping server, as it should be

    hub = MetaHubServer(tmp_path, config)
    hub.start()
    try:
        reader = threading.Thread(target=download, args=(hub.url,), daemon=True)
        reader.start()
        assert first_byte.wait(30), hub.log()
    finally:
        started = time.monotonic()
        hub.stop()  # SIGTERM, and SIGKILL after 10 s
        stopped_in = time.monotonic() - started
    assert stopped_in < 2 + 5, f"stopping took {stopped_in:.1f} s"

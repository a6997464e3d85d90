"""A `metahub serve` whose resident memory a test can watch while it works."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.support.metahub_server import MetaHubServer


class MeasuredMetaHub(MetaHubServer):
    def rss(self) -> int:
        """Resident set size of the serving process, in bytes."""
        process = self._process
        assert process is not None, "metahub is not running"
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")


class PeakRss:
    """Samples a server's RSS every few milliseconds in a thread; `peak` is the highest seen."""

    def __init__(self, server: MeasuredMetaHub, interval: float = 0.005) -> None:
        self.server = server
        self.interval = interval
        self.peak = server.rss()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.server.rss())
            self.samples += 1

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.server.rss())

"""What a real docker-registry was asked, read from its access log.

distribution writes one combined-log-format line per request once it has answered, so a test
first sends a marker request of its own and waits until the marker is logged: every request
answered before the marker was sent is in the log by then.
"""

from __future__ import annotations

import contextlib
import re
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass

from tests.support.servers import RegistryServer

_LINE = re.compile(
    r'"(?P<method>[A-Z]+) (?P<uri>\S+) HTTP/[\d.]+" (?P<status>\d{3}) \d+ '
    r'"[^"]*" "(?P<agent>[^"]*)"'
)
METAHUB_AGENT = "aiohttp"  # MetaHub's upstream client announces itself as aiohttp


@dataclass(frozen=True)
class Logged:
    method: str
    uri: str
    status: int
    agent: str


def logged(registry: RegistryServer) -> list[Logged]:
    """Every request the registry has answered, in the order logged."""
    _wait_for_marker(registry)
    found = []
    for line in registry.log_path.read_text(errors="replace").splitlines():
        match = _LINE.search(line)
        if match is not None and "/v2/_marker/" not in match["uri"]:
            found.append(
                Logged(match["method"], match["uri"], int(match["status"]), match["agent"])
            )
    return found


def metahub_requests(
    registry: RegistryServer, method: str | None = None, uri: str | None = None
) -> list[Logged]:
    """The requests MetaHub made to the registry, optionally only `method` and `uri`."""
    return [
        entry
        for entry in logged(registry)
        if METAHUB_AGENT in entry.agent
        and (method is None or entry.method == method)
        and (uri is None or entry.uri == uri)
    ]


def _wait_for_marker(registry: RegistryServer, timeout: float = 10) -> None:
    marker = f"/v2/_marker/{uuid.uuid4().hex}/manifests/latest"
    # A 404 (or 401) is an answer, which is all a marker needs.
    with contextlib.suppress(urllib.error.HTTPError):
        urllib.request.urlopen(registry.url + marker, timeout=5).close()
    deadline = time.monotonic() + timeout
    while marker not in registry.log_path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the registry did not log {marker}")
        time.sleep(0.02)

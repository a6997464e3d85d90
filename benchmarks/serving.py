"""Serving: MetaHub side by side with nginx and docker-registry, real servers on loopback.

One real `docker-registry` (distribution 2.8, filesystem storage) is the upstream and holds
`bench/app`: an index of eight entries, six of them built for CPU microarchitectures or CUDA
capabilities (`platform.features`), plus more indexes for the cold cases and one 256 MiB blob.
A real `metahub serve` (one worker; see docs/decisions.md) proxies it with its defaults: the
access log on, metrics on, the filtered-digest store in SQLite. Measured, in this order:

1. warm: the filtered index by tag, as docker asks for it (a Bearer token from MetaHub's
   /token, docker's Accept and User-Agent headers), with `wrk -t1 -c32`, against
   2. nginx serving the same bytes as a static file (the machine's practical limit), and
   3. the upstream registry serving the index by tag directly, and a second docker-registry
      in its pull-through proxy mode in front of it; and `metahub demo` (its own images, one of
      its logins) beside nginx serving the demo's answer. All take turns, round by round, so
      that load from other processes falls on all of them alike;
4. cold: tags MetaHub has never seen, one request at a time (p50, p99), each right after the
   same request straight to the upstream: indexes of eight entries, and of 1,000 (the
   selection suite's feature sets); beside MetaHub, the floor (`benchmarks/floor.py`): the
   same serving stack forwarding to the upstream with nothing of MetaHub's, which tells how
   much of the distance to direct is the stack's on the host of the day;
5. blobs: a 256 MiB blob downloaded with curl from the upstream and through MetaHub, in turns:
   relayed (streamed from the upstream and verified on the way), and from a second MetaHub
   with a local blob cache (the first download fills it, the others are cache hits), and from a
   third with `blobs.redirect: pass` in front of a registry that redirects the blob to its
   storage (curl follows; MetaHub's own count of blob bytes sent must stay 0), with each
   MetaHub process's peak RSS (VmHWM, reset before the first download); and through the
   floor, which hashes and checks the bytes as MetaHub's relay does;
6. 200 concurrent requests for a tag nobody has asked for yet, on connections opened
   beforehand; upstream requests are counted in the upstream's own access log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import orjson
import yaml
from multidict import CIMultiDict
from tests.support.metahub_server import MetaHubServer
from tests.support.nginx import NginxServer
from tests.support.push import Pusher, sha256
from tests.support.scripted_registry import Blob, ScriptedRegistry
from tests.support.servers import RegistryServer, free_port, require

from benchmarks import Column, SuiteResult
from benchmarks.floor import BareProxy
from benchmarks.selection import synthetic_index

WRK = "/usr/bin/wrk"
CURL = "/usr/bin/curl"
WRK_THREADS = 1
WRK_CONNECTIONS = 32  # as the baselines in shared/NOTES.md were taken
# One worker: the 2-core machine also runs wrk, and single flight is per process, so a second
# worker would cost the upstream a second GET in the cold burst (docs/decisions.md).
WORKERS = 1

REPOSITORY = "bench/app"
TAG = "latest"
LOGIN, PASSWORD = "bench", "bench-secret"
MACHINE_FEATURES = ["cpu:skylake_avx512", "nvcap:8.0"]
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
# What docker 20.10 (Debian's docker.io) sends for a manifest GET by tag, as captured from
# `docker pull` here: one Accept line per manifest type, in this order, and gzip. (It also sends
# `Connection: close`; wrk keeps connections open, as containerd and the baselines do.)
DOCKER_ACCEPT = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/json",
    "application/vnd.oci.image.manifest.v1+json",
)
DOCKER_USER_AGENT = (
    "docker/20.10.24+dfsg1 go/go1.19.8 git-commit/5d6db84 kernel/6.18.44 os/linux arch/amd64 "
    "UpstreamClient(Docker-Client/20.10.24+dfsg1 \\(linux\\))"
)
# (features, architecture): the index entries, in the order the index lists them.
BUILDS: tuple[tuple[list[str], str], ...] = (
    (["cpu:haswell"], "amd64"),
    (["cpu:skylake_avx512"], "amd64"),
    (["cpu:zen2"], "amd64"),
    (["cpu:broadwell", "nvcap:8.0"], "amd64"),
    (["cpu:broadwell", "nvcap:9.0"], "amd64"),
    ([], "amd64"),
    (["cpu:neoverse_v1"], "arm64"),
    ([], "arm64"),
)


@dataclass(frozen=True, slots=True)
class Plan:
    """How long and how much: the full run, or --quick to check that the suite works."""

    rounds: int  # warm: each server gets this many wrk runs, in turns
    seconds: int  # per wrk run
    cold_tags: int
    blob_mib: int
    blob_rounds: int
    burst: int
    large_cold_tags: int = 0  # cold tags of the LARGE_ENTRIES index


FULL = Plan(
    rounds=5, seconds=5, cold_tags=200, blob_mib=256, blob_rounds=3, burst=200, large_cold_tags=60
)
QUICK = Plan(
    rounds=1, seconds=1, cold_tags=20, blob_mib=32, blob_rounds=1, burst=200, large_cold_tags=8
)
# The large cold index: as many entries as the selection suite's largest, with its feature sets.
LARGE_ENTRIES = 1000


class ProxyRegistry(RegistryServer):
    """docker-registry in its pull-through proxy mode in front of `remote`."""

    name = "proxy"

    def __init__(self, tmp: Path, remote: str) -> None:
        super().__init__(tmp)
        self.remote = remote

    def _write_config(self) -> None:
        super()._write_config()
        config = yaml.safe_load(self.config_path.read_text())
        config["proxy"] = {"remoteurl": self.remote}
        self.config_path.write_text(yaml.safe_dump(config))


class DemoServer:
    """`metahub demo` as `make demo` runs it, on a port of its own, its log in a file."""

    login = "qnib-type2"  # = its password; cpu:skylake
    repository = "qnib/bench"

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> DemoServer:
        self.tmp.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "metahub", "demo", "--port", str(self.port)]
        with (self.tmp / "demo.log").open("ab") as log:
            self._process = subprocess.Popen(
                [*argv, "--data-dir", str(self.tmp / "data")],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 180  # the first start builds the demo's images
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError((self.tmp / "demo.log").read_text()[-3000:])
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            time.sleep(0.2)
        raise RuntimeError("metahub demo did not start within 180 s")

    def __exit__(self, *exc: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)


# -- content ---------------------------------------------------------------------------------


def _image(pusher: Pusher, label: str, features: list[str], architecture: str) -> dict[str, object]:
    """Push one small image (config and layer blobs, manifest); its index descriptor."""
    config = orjson.dumps(
        {"architecture": architecture, "os": "linux", "config": {"Labels": {"build": label}}}
    )
    layer = hashlib.sha256(label.encode()).digest() * 64
    manifest = orjson.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": pusher.blob(REPOSITORY, config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": OCI_LAYER,
                    "digest": pusher.blob(REPOSITORY, layer),
                    "size": len(layer),
                }
            ],
        }
    )
    platform: dict[str, object] = {"architecture": architecture, "os": "linux"}
    if features:
        platform["features"] = features
    return {
        "mediaType": OCI_MANIFEST,
        "digest": pusher.manifest(REPOSITORY, sha256(manifest), manifest, OCI_MANIFEST),
        "size": len(manifest),
        "platform": platform,
    }


def _index(entries: list[dict[str, object]], revision: str) -> bytes:
    """An index over `entries`; `revision` makes each tag's bytes (and digest) its own."""
    return orjson.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": entries,
            "annotations": {"org.opencontainers.image.revision": revision},
        }
    )


def _large_entries(entries: list[dict[str, object]]) -> list[dict[str, object]]:
    """LARGE_ENTRIES entries with the selection suite's feature sets, each pointing at one of
    the pushed images of its architecture (the upstream refuses an index of unknown digests;
    selection reads features and platforms, not whose digest is whose)."""
    synthetic = orjson.loads(synthetic_index(LARGE_ENTRIES))["manifests"]
    by_arch = {entry["platform"]["architecture"]: entry for entry in entries}  # type: ignore[index]
    large = []
    for item in synthetic:
        image = by_arch.get(item["platform"]["architecture"], by_arch["amd64"])
        large.append({**image, "platform": item["platform"]})
    return large


@dataclass(frozen=True, slots=True)
class Content:
    cold: list[str]  # tags of an index like TAG's, one per cold request
    large_cold: list[str]  # tags of a LARGE_ENTRIES index
    blob: str


def push_content(upstream: RegistryServer, plan: Plan) -> Content:
    """The index under TAG, one more per cold tag and the burst, the large cold indexes and
    the blob."""
    pusher = Pusher(upstream.url)
    try:
        entries = [
            _image(pusher, f"{arch}-{'-'.join(features) or 'generic'}", features, arch)
            for features, arch in BUILDS
        ]
        pusher.manifest(REPOSITORY, TAG, _index(entries, TAG), OCI_INDEX)
        cold = [f"cold-{number}" for number in range(plan.cold_tags)]
        for tag in [*cold, "burst"]:
            pusher.manifest(REPOSITORY, tag, _index(entries, tag), OCI_INDEX)
        large = _large_entries(entries)
        large_cold = [f"large-{number}" for number in range(plan.large_cold_tags)]
        for tag in large_cold:
            pusher.manifest(REPOSITORY, tag, _index(large, tag), OCI_INDEX)
        blob = pusher.blob(REPOSITORY, os.urandom(plan.blob_mib * 1024 * 1024))
    finally:
        pusher.close()
    return Content(cold, large_cold, blob)


# -- clients ---------------------------------------------------------------------------------


def docker_headers(token: str | None) -> list[tuple[str, str]]:
    """The headers docker sends for a manifest GET (and the token it got after a 401)."""
    headers = [("Authorization", f"Bearer {token}")] if token else []
    headers += [("User-Agent", DOCKER_USER_AGENT)]
    headers += [("Accept", accept) for accept in DOCKER_ACCEPT]
    return [*headers, ("Accept-Encoding", "gzip")]


def raw_request(host: str, path: str, headers: list[tuple[str, str]]) -> str:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers)]
    return "\r\n".join(lines) + "\r\n\r\n"


# wrk sends this exact request (repeated Accept lines included, which wrk's -H cannot do) and
# reports its own summary as one JSON line.
_WRK_SCRIPT = """
local raw = %s
request = function() return raw end
done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %%d, "duration_us": %%d, "bytes": %%d, "connect": %%d, "read": %%d, ' ..
    '"write": %%d, "status": %%d, "timeout": %%d, "p50_us": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.duration, summary.bytes, errors.connect, errors.read,
    errors.write, errors.status, errors.timeout, latency:percentile(50),
    latency:percentile(99)))
end
"""


@dataclass(frozen=True, slots=True)
class WrkRun:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def wrk(url: str, request: str, seconds: int, workdir: Path) -> WrkRun:
    script = workdir / "request.lua"
    script.write_text(_WRK_SCRIPT % _lua_string(request))
    argv = [
        require(WRK),
        f"-t{WRK_THREADS}",
        f"-c{WRK_CONNECTIONS}",
        f"-d{seconds}s",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    errors = sum(summary[k] for k in ("connect", "read", "write", "status", "timeout"))
    return WrkRun(
        requests_per_s=summary["requests"] / (summary["duration_us"] / 1e6),
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        errors=errors,
    )


def _lua_string(text: str) -> str:
    return '"' + "".join(f"\\{byte:03d}" for byte in text.encode()) + '"'


def get(url: str, headers: list[tuple[str, str]]) -> tuple[int, bytes, dict[str, str]]:
    """One GET with exactly these headers (repeats kept), on a connection of its own."""
    host, _, path = url.removeprefix("http://").partition("/")
    connection = http.client.HTTPConnection(host, timeout=30)
    try:
        connection.putrequest("GET", "/" + path, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        body = response.read()
        return response.status, body, {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


def fetch_token(
    hub: MetaHubServer | DemoServer,
    repository: str = REPOSITORY,
    login: str = LOGIN,
    password: str = PASSWORD,
) -> str:
    """A token as `docker login` and then a pull get it: GET /token with Basic credentials."""
    response = httpx.get(
        f"{hub.url}/token",
        params={"service": "metahub", "scope": f"repository:{repository}:pull", "account": login},
        auth=(login, password),
        timeout=30,
    )
    response.raise_for_status()
    token: str = response.json()["token"]
    return token


# The upstream's access log (combined format), one line per request it answered.
_ACCESS_LINE = re.compile(r'^\S+ - \S+ \[[^\]]*\] "([A-Z]+) (\S+) HTTP/[0-9.]+"', re.MULTILINE)


# -- the cases -------------------------------------------------------------------------------


@dataclass(slots=True)
class Servers:
    upstream: RegistryServer
    proxy: ProxyRegistry
    hub: MetaHubServer
    nginx: NginxServer
    caching_hub: MetaHubServer  # the same, with a local blob cache
    demo: DemoServer
    floor: BareProxy  # the serving stack alone in front of the upstream (benchmarks/floor.py)


def _checked_index(name: str, url: str, headers: list[tuple[str, str]]) -> bytes:
    """A filtered index as a MetaHub answers docker, checked: its type, platforms, digest."""
    status, served, answered = get(url, headers)
    if status != 200:
        raise RuntimeError(f"{name} answered {status}: {served[:300]!r}")
    platforms = [m["platform"]["architecture"] for m in orjson.loads(served)["manifests"]]
    if answered.get("content-type") != OCI_INDEX or sorted(platforms) != ["amd64", "arm64"]:
        raise RuntimeError(f"{name} did not answer docker with the filtered index: {served!r}")
    if answered.get("docker-content-digest") != sha256(served):
        raise RuntimeError(f"{name}'s Docker-Content-Digest does not match its bytes")
    return served


def warm(servers: Servers, plan: Plan, workdir: Path) -> dict[str, list[WrkRun]]:
    """wrk against each server in turns; every answer checked once before."""
    path = f"/v2/{REPOSITORY}/manifests/{TAG}"
    demo_path = f"/v2/{DemoServer.repository}/manifests/latest"
    token = fetch_token(servers.hub)
    demo = servers.demo
    demo_token = fetch_token(demo, demo.repository, demo.login, demo.login)
    served = _checked_index("MetaHub", servers.hub.url + path, docker_headers(token))
    demo_served = _checked_index("metahub demo", demo.url + demo_path, docker_headers(demo_token))
    # nginx serves each MetaHub's answer as a static file at the same path.
    root = workdir / "static"
    for static_path, data in ((path, served), (demo_path, demo_served)):
        (root / static_path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / static_path.lstrip("/")).write_bytes(data)
    servers.nginx.server_block = f"root {root}; default_type {OCI_INDEX};"
    servers.nginx.start()
    nginx = (servers.nginx.url, servers.nginx.host)
    # name -> (base URL, Host, path, headers, the bytes nginx must serve)
    targets = {
        "metahub": (servers.hub.url, servers.hub.host, path, docker_headers(token), None),
        "nginx": (*nginx, path, docker_headers(None), served),
        "demo": (demo.url, demo.host, demo_path, docker_headers(demo_token), None),
        "nginx-demo": (*nginx, demo_path, docker_headers(None), demo_served),
        "registry": (servers.upstream.url, servers.upstream.host, path, docker_headers(None), None),
        "proxy": (servers.proxy.url, servers.proxy.host, path, docker_headers(None), None),
    }
    for name, (url, _, target_path, headers, expected) in targets.items():
        status, body, _ = get(url + target_path, headers)
        if status != 200 or (expected is not None and body != expected):
            raise RuntimeError(f"{name} answered {status} for {target_path}: {body[:300]!r}")
    runs: dict[str, list[WrkRun]] = {name: [] for name in targets}
    for _ in range(plan.rounds):
        for name, (url, host, target_path, headers, _) in targets.items():
            request = raw_request(host, target_path, headers)
            wrk(url + target_path, request, 1, workdir)  # warm-up
            runs[name].append(wrk(url + target_path, request, plan.seconds, workdir))
    return runs


def cold(servers: Servers, tags: list[str]) -> dict[str, list[float]]:
    """Tags never asked for, one at a time: straight to the upstream, then through MetaHub and
    the floor, which take turns at going second (the upstream may answer a repeat faster)."""
    token = fetch_token(servers.hub)
    times: dict[str, list[float]] = {"metahub": [], "registry": [], "floor": []}
    clients = {
        "registry": (servers.upstream.host, docker_headers(None)),
        "metahub": (servers.hub.host, docker_headers(token)),
        "floor": (servers.floor.host, docker_headers(None)),
    }
    connections = {
        name: http.client.HTTPConnection(host, timeout=30) for name, (host, _) in clients.items()
    }
    orders = [["registry", "metahub", "floor"], ["registry", "floor", "metahub"]]
    try:
        for number, tag in enumerate(tags):
            for name in orders[number % 2]:
                headers = clients[name][1]
                connection = connections[name]
                start = time.perf_counter()
                connection.putrequest(
                    "GET", f"/v2/{REPOSITORY}/manifests/{tag}", skip_accept_encoding=True
                )
                for key, value in headers:
                    connection.putheader(key, value)
                connection.endheaders()
                response = connection.getresponse()
                body = response.read()
                times[name].append(time.perf_counter() - start)
                if response.status != 200:
                    raise RuntimeError(
                        f"{name} answered {response.status} for {tag}: {body[:300]!r}"
                    )
    finally:
        for connection in connections.values():
            connection.close()
    return times


@dataclass(frozen=True, slots=True)
class BlobRuns:
    direct_mb_s: list[float]
    metahub_mb_s: list[float]  # relayed from the upstream, verified on the way
    cache_fill_mb_s: float  # the first download through the caching MetaHub
    cache_hit_mb_s: list[float]
    rss_before_mib: float
    peak_rss_mib: float
    cache_rss_before_mib: float
    cache_peak_rss_mib: float
    redirect_mb_s: list[float]  # `blobs.redirect: pass`: curl follows MetaHub's 307 itself
    redirect_peak_rss_mib: float
    redirect_bytes_served: float  # response body bytes the passing MetaHub counted
    floor_mb_s: list[float]  # relayed and verified by the floor (benchmarks/floor.py)


def blobs(servers: Servers, digest: str, plan: Plan) -> BlobRuns:
    path = f"/v2/{REPOSITORY}/blobs/{digest}"
    relay, caching = servers.hub, servers.caching_hub
    tokens = {relay: fetch_token(relay), caching: fetch_token(caching)}
    before = {hub: _rss_mib(hub, "VmRSS") for hub in tokens}
    for hub in tokens:
        for pid in _pids(hub):
            _reset_peak_rss(pid)
    direct: list[float] = []
    through: list[float] = []
    hits: list[float] = []
    redirected: list[float] = []
    floor: list[float] = []
    fill = _curl(caching.url + path, tokens[caching], plan.blob_mib)
    with _passing_hub(servers, digest) as passing:
        token = fetch_token(passing)
        for pid in _pids(passing):
            _reset_peak_rss(pid)
        for _ in range(plan.blob_rounds):
            direct.append(_curl(servers.upstream.url + path, None, plan.blob_mib))
            through.append(_curl(relay.url + path, tokens[relay], plan.blob_mib))
            hits.append(_curl(caching.url + path, tokens[caching], plan.blob_mib))
            redirected.append(_curl(passing.url + path, token, plan.blob_mib, follow=True))
            floor.append(_curl(servers.floor.url + path, None, plan.blob_mib))
        passing_rss = _rss_mib(passing, "VmHWM")
        served = _served_bytes(passing, "blob")
    return BlobRuns(
        direct,
        through,
        fill,
        hits,
        before[relay],
        _rss_mib(relay, "VmHWM"),
        before[caching],
        _rss_mib(caching, "VmHWM"),
        redirected,
        passing_rss,
        served,
        floor,
    )


@contextlib.contextmanager
def _passing_hub(servers: Servers, digest: str) -> Iterator[MetaHubServer]:
    """A MetaHub with `blobs.redirect: pass` in front of a registry that redirects the blob to
    its storage, played by the benchmark's upstream: the bytes go from there to curl."""
    with contextlib.ExitStack() as stack:
        storage = stack.enter_context(ScriptedRegistry())
        storage.add_blob(Blob(b"", digest=digest, redirect_to=servers.upstream.url))
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="metahub-pass-")))
        config = {key: value for key, value in servers.hub.config.items() if key != "data_dir"} | {
            "upstream": {"url": storage.url, "redirect_hosts": [servers.upstream.host]},
            "blobs": {"redirect": "pass"},
        }
        yield stack.enter_context(MetaHubServer(workdir, config, workers=WORKERS))


def _served_bytes(hub: MetaHubServer, route: str) -> float:
    """`metahub_bytes_served_total` for a route, from the server's own metrics."""
    text = httpx.get(f"{hub.url}/metrics", timeout=30).text
    pattern = re.compile(rf'^metahub_bytes_served_total{{route="{route}"}} (\S+)$', re.MULTILINE)
    found = pattern.findall(text)
    if not found:  # no line is no measurement, not zero bytes
        raise RuntimeError(f"{hub.url}/metrics has no metahub_bytes_served_total for {route}")
    return sum(float(value) for value in found)


def _rss_mib(hub: MetaHubServer, field: str) -> float:
    return sum(_status_kib(pid, field) for pid in _pids(hub)) / 1024


def _curl(url: str, token: str | None, mib: int, *, follow: bool = False) -> float:
    argv = [
        require(CURL),
        "-sS",
        *(["-L"] if follow else []),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download} %{time_total}",
    ]
    if token:
        argv += ["-H", f"Authorization: Bearer {token}"]
    done = subprocess.run([*argv, url], capture_output=True, text=True, timeout=300, check=True)
    code, size, seconds = done.stdout.split()
    if code != "200" or int(size) != mib * 1024 * 1024:
        raise RuntimeError(f"{url} answered {code} with {size} bytes")
    return int(size) / float(seconds) / 1e6


def _pids(hub: MetaHubServer) -> list[int]:
    """The MetaHub server process and its workers (its process group)."""
    assert hub._process is not None
    group = os.getpgid(hub._process.pid)
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry.name)) == group:
                    found.append(int(entry.name))
    return found


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak_rss(pid: int) -> None:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@dataclass(frozen=True, slots=True)
class Burst:
    requests: int
    ok: int
    digests: int  # distinct digests answered: must be 1
    seconds: float
    upstream_manifest_gets: int
    upstream_requests: int


def burst(servers: Servers, count: int) -> Burst:
    """`count` requests for one cold tag at once, on connections opened (and used) before."""
    token = fetch_token(servers.hub)
    headers = docker_headers(token)
    log = servers.upstream.log_path
    offset = log.stat().st_size
    started, answers = asyncio.run(_burst(servers.hub.url, headers, count))
    time.sleep(0.5)  # let the upstream's log catch up
    with log.open("rb") as handle:
        handle.seek(offset)
        requests = _ACCESS_LINE.findall(handle.read().decode(errors="replace"))
    burst_path = f"/v2/{REPOSITORY}/manifests/burst"
    return Burst(
        requests=count,
        ok=sum(1 for status, _ in answers if status == 200),
        digests=len({digest for _, digest in answers}),
        seconds=started,
        upstream_manifest_gets=sum(1 for r in requests if r == ("GET", burst_path)),
        upstream_requests=len(requests),
    )


async def _burst(
    base: str, headers: list[tuple[str, str]], count: int
) -> tuple[float, list[tuple[int, str]]]:
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    hdrs = CIMultiDict(headers)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:

        async def ping() -> None:
            async with session.get(f"{base}/v2/", headers=hdrs) as response:
                await response.read()

        async def one() -> tuple[int, str]:
            async with session.get(
                f"{base}/v2/{REPOSITORY}/manifests/burst", headers=hdrs
            ) as response:
                await response.read()
                return response.status, response.headers.get("Docker-Content-Digest", "")

        await asyncio.gather(*(ping() for _ in range(count)))  # `count` open connections
        start = time.perf_counter()
        answers = await asyncio.gather(*(one() for _ in range(count)))
        return time.perf_counter() - start, list(answers)


# -- the run ---------------------------------------------------------------------------------


@contextlib.contextmanager
def running(workdir: Path, plan: Plan) -> Iterator[tuple[Servers, Content]]:
    upstream = RegistryServer(workdir / "upstream")
    proxy = ProxyRegistry(workdir / "proxy", upstream.url)
    config: dict[str, object] = {
        "upstream": {"url": upstream.url},
        "machine_types": [
            {
                "name": "skylake-a100",
                "login": LOGIN,
                "password": PASSWORD,
                "features": MACHINE_FEATURES,
            }
        ],
    }
    (workdir / "hub").mkdir()
    hub = MetaHubServer(workdir / "hub", config, workers=WORKERS)
    (workdir / "caching-hub").mkdir()
    caching_hub = MetaHubServer(
        workdir / "caching-hub",
        {**config, "cache": {"blobs": {"path": str(workdir / "caching-hub" / "blobs")}}},
        workers=WORKERS,
    )
    nginx = NginxServer(workdir / "nginx", "")
    demo = DemoServer(workdir / "demo")
    floor = BareProxy(workdir / "floor", upstream.url)
    with contextlib.ExitStack() as stack:
        stack.enter_context(upstream)
        content = push_content(upstream, plan)
        stack.enter_context(proxy)
        stack.enter_context(hub)
        stack.enter_context(caching_hub)
        stack.enter_context(demo)
        stack.enter_context(floor)
        stack.callback(nginx.stop)  # started by `warm`, once it knows the bytes to serve
        yield Servers(upstream, proxy, hub, nginx, caching_hub, demo, floor), content


COLUMNS = [
    Column("case", "Case"),
    Column("server", "Server"),
    Column("value", "Value", ",.1f"),
    Column("unit", "Unit"),
    Column("p50_ms", "p50 ms", ",.2f"),
    Column("p99_ms", "p99 ms", ",.2f"),
    Column("ratio", "Ratio", ",.2f"),
    Column("target", "Target"),
    Column("met", "Met"),
]

_NAMES = {
    "metahub": "MetaHub, filtered, Bearer",
    "nginx": "nginx, static file",
    "demo": "metahub demo, filtered, Bearer",
    "nginx-demo": "nginx, the demo's bytes",
    "registry": "docker-registry, direct",
    "proxy": "docker-registry, pull-through",
}
# (server, baseline, label, at least): the warm ratios and their targets (issue #13).
_WARM_RATIOS = (
    ("metahub", "nginx", "MetaHub serve / nginx", 0.25),
    ("demo", "nginx-demo", "metahub demo / nginx", 0.25),
    ("metahub", "proxy", "MetaHub / pull-through", 8),
)


def _median_run(runs: list[WrkRun]) -> WrkRun:
    ordered = sorted(runs, key=lambda run: run.requests_per_s)
    return ordered[len(ordered) // 2]


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def _ratio_row(case: str, label: str, ratio: float, minimum: float) -> dict[str, object]:
    return {
        "case": case,
        "server": label,
        "ratio": ratio,
        "target": f">= {minimum:g}",
        "met": "yes" if ratio >= minimum else "NO",
    }


def _ratio_at_most_row(case: str, label: str, ratio: float, maximum: float) -> dict[str, object]:
    """A ratio whose target is a ceiling (a latency against the direct one)."""
    return {
        "case": case,
        "server": label,
        "ratio": ratio,
        "target": f"<= {maximum:g}",
        "met": "yes" if ratio <= maximum else "NO",
    }


def _warm_rows(runs: dict[str, list[WrkRun]]) -> list[dict[str, object]]:
    case = "1-3 warm, by tag"
    medians = {name: _median_run(server_runs) for name, server_runs in runs.items()}
    rows: list[dict[str, object]] = [
        {
            "case": case,
            "server": _NAMES[name],
            "value": median.requests_per_s,
            "unit": "req/s",
            "p50_ms": median.p50_ms,
            "p99_ms": median.p99_ms,
            "runs": [run.requests_per_s for run in runs[name]],
            "errors": sum(run.errors for run in runs[name]),
        }
        for name, median in medians.items()
    ]
    for server, other, label, minimum in _WARM_RATIOS:
        # Each round's runs follow one another within seconds, so their ratio cancels the
        # slower swings of load on a shared machine that a ratio of medians would keep.
        paired = [
            hub.requests_per_s / run.requests_per_s
            for hub, run in zip(runs[server], runs[other], strict=True)
        ]
        row = _ratio_row(case, label, statistics.median(paired), minimum)
        row["round_ratios"] = paired
        row["ratio_of_medians"] = medians[server].requests_per_s / medians[other].requests_per_s
        rows.append(row)
    return rows


def _cold_rows(
    times: dict[str, list[float]], entries: int, maximum: float
) -> list[dict[str, object]]:
    case = f"4 cold, {entries:,}-entry index"
    names = {
        "metahub": _NAMES["metahub"],
        "registry": "docker-registry, direct",
        "floor": _FLOOR,
    }
    rows: list[dict[str, object]] = [
        {
            "case": case,
            "server": label,
            "value": len(times[name]),
            "unit": "requests",
            "p50_ms": statistics.median(times[name]) * 1000,
            "p99_ms": _percentile(times[name], 0.99) * 1000,
        }
        for name, label in names.items()
    ]
    # Each MetaHub request follows its direct twin at once: the median of the pairs' ratios.
    paired = [hub / direct for hub, direct in zip(times["metahub"], times["registry"], strict=True)]
    row = _ratio_at_most_row(case, "MetaHub / direct", statistics.median(paired), maximum)
    row["ratio_of_medians"] = statistics.median(times["metahub"]) / statistics.median(
        times["registry"]
    )
    floor = [bare / direct for bare, direct in zip(times["floor"], times["registry"], strict=True)]
    row["floor"] = statistics.median(floor)
    rows.append(row)
    rows.append({"case": case, "server": "floor / direct", "ratio": row["floor"]})
    return rows


# What the serving stack costs alone: uvicorn and aiohttp forwarding, nothing of MetaHub's.
_FLOOR = "floor: uvicorn + aiohttp, forwarding"

RELAY_TARGET = 0.70  # relayed and verified / the upstream serving the blob directly
FILL_TARGET = 0.60  # the first download through the blob cache / direct
HIT_TARGET = 1.0  # a blob cache hit / direct, in every round


def _blob_rows(runs: BlobRuns, mib: int) -> list[dict[str, object]]:
    case = f"5 blob, {mib} MiB"
    direct = statistics.median(runs.direct_mb_s)
    relayed = statistics.median(runs.metahub_mb_s)
    hit = statistics.median(runs.cache_hit_mb_s)
    redirected = statistics.median(runs.redirect_mb_s)
    floor = statistics.median(runs.floor_mb_s)
    # Targets from issue #13; "hit" must hold in every run, so its row takes the worst one.
    relay_ratio = _ratio_row(case, "MetaHub relayed / direct", relayed / direct, RELAY_TARGET)
    relay_ratio["floor"] = floor / direct
    fill_ratio = _ratio_row(
        case, "MetaHub cache fill / direct", runs.cache_fill_mb_s / direct, FILL_TARGET
    )
    worst_hit = min(h / d for h, d in zip(runs.cache_hit_mb_s, runs.direct_mb_s, strict=True))
    return [
        {"case": case, "server": "docker-registry, direct", "value": direct, "unit": "MB/s"}
        | {"runs": runs.direct_mb_s},
        {"case": case, "server": "MetaHub, relayed and verified", "value": relayed, "unit": "MB/s"}
        | {"runs": runs.metahub_mb_s},
        relay_ratio,
        {"case": case, "server": "MetaHub, filling its blob cache", "unit": "MB/s"}
        | {"value": runs.cache_fill_mb_s},
        fill_ratio,
        {"case": case, "server": f"{_FLOOR}, verified", "value": floor, "unit": "MB/s"}
        | {"runs": runs.floor_mb_s},
        {"case": case, "server": "floor / direct", "ratio": floor / direct},
        {"case": case, "server": "MetaHub, blob cache hit", "value": hit, "unit": "MB/s"}
        | {"runs": runs.cache_hit_mb_s},
        _ratio_row(case, "MetaHub cache hit / direct, worst round", worst_hit, HIT_TARGET),
        {"case": case, "server": "MetaHub peak RSS, relay", "unit": "MiB"}
        | {"value": runs.peak_rss_mib, "rss_before_mib": runs.rss_before_mib},
        {"case": case, "server": "MetaHub peak RSS, blob cache", "unit": "MiB"}
        | {"value": runs.cache_peak_rss_mib, "rss_before_mib": runs.cache_rss_before_mib},
        {"case": case, "server": "MetaHub, redirect passed (curl -L)", "unit": "MB/s"}
        | {"value": redirected, "runs": runs.redirect_mb_s},
        {"case": case, "server": "MetaHub redirect passed / direct", "ratio": redirected / direct},
        {"case": case, "server": "MetaHub blob bytes sent, redirect passed", "unit": "bytes"}
        | {"value": runs.redirect_bytes_served, "target": "0"}
        | {"met": "yes" if runs.redirect_bytes_served == 0 else "NO"},
        {"case": case, "server": "MetaHub peak RSS, redirect passed", "unit": "MiB"}
        | {"value": runs.redirect_peak_rss_mib},
    ]


def _burst_row(result: Burst) -> dict[str, object]:
    gets = result.upstream_manifest_gets
    met = gets <= 1 and result.ok == result.requests and result.digests == 1
    return {
        "case": f"6 {result.requests} cold at once",
        "server": "upstream manifest GETs",
        "value": gets,
        "unit": "GETs",
        "target": "<= 1",
        "met": "yes" if met else "NO",
        "ok": result.ok,
        "distinct_digests": result.digests,
        "seconds": result.seconds,
        "upstream_requests": result.upstream_requests,
    }


def run(quick: bool) -> SuiteResult:
    plan = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="metahub-bench-") as tmp:
        workdir = Path(tmp)
        with running(workdir, plan) as (servers, content):
            warm_runs = warm(servers, plan, workdir)
            cold_times = cold(servers, content.cold)
            large_cold_times = cold(servers, content.large_cold)
            blob_runs = blobs(servers, content.blob, plan)
            burst_result = burst(servers, plan.burst)
    rows = [
        *_warm_rows(warm_runs),
        *_cold_rows(cold_times, len(BUILDS), 1.5),
        *_cold_rows(large_cold_times, LARGE_ENTRIES, 2.0),
        *_blob_rows(blob_runs, plan.blob_mib),
        _burst_row(burst_result),
    ]
    errors = sum(run.errors for runs in warm_runs.values() for run in runs)
    return SuiteResult(
        title="Serving: MetaHub beside nginx and docker-registry, on loopback",
        columns=COLUMNS,
        rows=rows,
        parameters={
            "wrk": {
                "threads": WRK_THREADS,
                "connections": WRK_CONNECTIONS,
                "seconds": plan.seconds,
                "rounds": plan.rounds,
            },
            "metahub_workers": WORKERS,
            "index_entries": len(BUILDS),
            "machine_features": MACHINE_FEATURES,
            "cold_tags": plan.cold_tags,
            "large_cold_tags": plan.large_cold_tags,
            "large_entries": LARGE_ENTRIES,
            "blob_mib": plan.blob_mib,
            "blob_rounds": plan.blob_rounds,
            "burst": plan.burst,
            "accept": list(DOCKER_ACCEPT),
        },
        notes=[
            f"warm: wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS}, {plan.rounds} x {plan.seconds} s "
            f"per server in turns, the median run shown, ratios the median of each round's; "
            f"{errors} errors or non-2xx answers",
            f"MetaHub: {WORKERS} worker, access log and metrics on; cold: {plan.cold_tags} "
            f"tags of {len(BUILDS)} entries and {plan.large_cold_tags} of {LARGE_ENTRIES:,}, "
            "each after the same GET to the upstream, the ratio the median of those pairs'; "
            f"blob: median of {plan.blob_rounds} curl downloads each, "
            "the cache's target on hits (every pull after a blob's first)",
            f"burst: {burst_result.ok}/{burst_result.requests} answered 200, "
            f"{burst_result.digests} digest(s), {burst_result.seconds * 1000:.0f} ms; "
            f"the upstream saw {burst_result.upstream_requests} request(s) in all",
        ],
    )

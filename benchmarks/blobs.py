"""Blobs: MetaHub's blob paths beside the upstream serving the same blob, and beside an older
MetaHub in the same run.

One real `docker-registry` holds one random blob. For each MetaHub under test, a relaying
`metahub serve` (no blob cache) and a caching one (`cache.blobs`); for every round a fresh caching
one whose first download is the fill. Rounds take turns: the upstream directly, then for each
MetaHub its relay, its cache hit and its fill, all with curl. Load from other work falls on all
of them alike; ratios are the median of each round's ratio to that round's direct download.

Besides the rate, the CPU time each MetaHub process spent per GiB (utime + stime from /proc):
on a shared two-core machine the rate moves with everyone else's load, the CPU per byte much
less, so it tells whether a change made MetaHub cheaper even when the clock cannot.

Beside them, the rate at which hashlib's SHA-256 alone takes the same blob on one core: the
relay and the fill hash every byte, so that rate, as a ratio to the direct download, bounds both.

`METAHUB_BENCH_BASELINE=<git revision>` adds the MetaHub of that revision (its `src/`, from
`git archive`) as a second set of servers: before and after in one run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import statistics
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.metahub_server import MetaHubServer
from tests.support.push import Pusher
from tests.support.servers import RegistryServer

from benchmarks import Column, SuiteResult
from benchmarks.serving import (
    FILL_TARGET,
    HIT_TARGET,
    LOGIN,
    MACHINE_FEATURES,
    PASSWORD,
    RELAY_TARGET,
    REPOSITORY,
    _curl,
    _pids,
    _reset_peak_rss,
    _rss_mib,
    fetch_token,
)

ROOT = Path(__file__).parent.parent
BASELINE_ENV = "METAHUB_BENCH_BASELINE"
CURRENT = "this tree"


@dataclass(frozen=True, slots=True)
class Plan:
    mib: int
    rounds: int


FULL = Plan(mib=256, rounds=5)
QUICK = Plan(mib=32, rounds=1)

COLUMNS = [
    Column("path", "Path"),
    Column("server", "MetaHub"),
    Column("value", "MB/s", ",.0f"),
    Column("ratio", "/ direct", ",.2f"),
    Column("cpu_s_per_gib", "CPU s/GiB", ",.2f"),
    Column("peak_rss_mib", "Peak RSS MiB", ",.1f"),
    Column("target", "Target"),
    Column("met", "Met"),
]


@dataclass(slots=True)
class Measured:
    rates: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    cpu_s_per_gib: list[float] = field(default_factory=list)
    peak_rss_mib: float = 0.0


def _cpu_seconds(hub: MetaHubServer) -> float:
    total = 0
    for pid in _pids(hub):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _source(revision: str) -> Iterator[Path]:
    """`src/` of a git revision, unpacked into a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="metahub-baseline-") as tmp:
        archive = Path(tmp) / "src.tar"
        subprocess.run(
            ["git", "-C", str(ROOT), "archive", "-o", str(archive), revision, "src"], check=True
        )
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp) / "src"


@contextlib.contextmanager
def _python_path(src: Path) -> Iterator[None]:
    """Servers started inside run the MetaHub in `src` (MetaHubServer inherits the env)."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(src)
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def _sha256_rate(data: bytes) -> float:
    """MB/s at which hashlib's SHA-256 takes `data` in 256 KiB pieces, as the relay does; the
    best of three."""
    view = memoryview(data)
    best = 0.0
    for _ in range(3):
        hasher = hashlib.sha256()
        started = time.perf_counter()
        for offset in range(0, len(view), 256 * 1024):
            hasher.update(view[offset : offset + 256 * 1024])
        best = max(best, len(data) / (time.perf_counter() - started) / 1e6)
    return best


def run(quick: bool) -> SuiteResult:
    plan = QUICK if quick else FULL
    baseline = os.environ.get(BASELINE_ENV)
    sources = {CURRENT: ROOT / "src"}
    with contextlib.ExitStack() as stack:
        if baseline:
            sources[f"at {baseline}"] = stack.enter_context(_source(baseline))
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="metahub-bench-")))
        upstream = stack.enter_context(RegistryServer(workdir / "upstream"))
        pusher = Pusher(upstream.url)
        blob = os.urandom(plan.mib * 1024 * 1024)
        try:
            digest = pusher.blob(REPOSITORY, blob)
        finally:
            pusher.close()
        hashing = _sha256_rate(blob)
        del blob
        config: dict[str, object] = {
            "upstream": {"url": upstream.url},
            "machine_types": [
                {
                    "name": "bench",
                    "login": LOGIN,
                    "password": PASSWORD,
                    "features": MACHINE_FEATURES,
                }
            ],
        }

        def start(name: str, src: Path, cache: bool) -> MetaHubServer:
            directory = workdir / name
            directory.mkdir()
            settings = dict(config)
            if cache:
                settings["cache"] = {"blobs": {"path": str(directory / "blobs")}}
            with _python_path(src):
                return stack.enter_context(MetaHubServer(directory, settings))

        hubs = {
            label: (start(f"{n}-relay", src, False), start(f"{n}-cache", src, True))
            for n, (label, src) in enumerate(sources.items())
        }
        path = f"/v2/{REPOSITORY}/blobs/{digest}"
        tokens = {hub: fetch_token(hub) for pair in hubs.values() for hub in pair}
        for hub in tokens:
            _curl(hub.url + path, tokens[hub], plan.mib)  # warm: the caching one fills here
            for pid in _pids(hub):
                _reset_peak_rss(pid)
        measured = {
            (label, kind): Measured() for label in hubs for kind in ("relay", "hit", "fill")
        }
        direct: list[float] = []

        def download(label: str, kind: str, hub: MetaHubServer, token: str, rate: float) -> None:
            before = _cpu_seconds(hub)
            speed = _curl(hub.url + path, token, plan.mib)
            entry = measured[(label, kind)]
            entry.rates.append(speed)
            entry.ratios.append(speed / rate)
            entry.cpu_s_per_gib.append((_cpu_seconds(hub) - before) * 1024 / plan.mib)

        for number in range(plan.rounds):
            rate = _curl(upstream.url + path, None, plan.mib)
            direct.append(rate)
            for n, (label, (relay, caching)) in enumerate(hubs.items()):
                download(label, "relay", relay, tokens[relay], rate)
                download(label, "hit", caching, tokens[caching], rate)
                filling = start(f"{n}-fill-{number}", sources[label], True)
                token = fetch_token(filling)
                for pid in _pids(filling):
                    _reset_peak_rss(pid)  # start-up (migrations, imports) is not the blob's
                download(label, "fill", filling, token, rate)
                fill_rss = _rss_mib(filling, "VmHWM")
                entry = measured[(label, "fill")]
                entry.peak_rss_mib = max(entry.peak_rss_mib, fill_rss)
                filling.stop()
        for label, (relay, caching) in hubs.items():
            measured[(label, "relay")].peak_rss_mib = _rss_mib(relay, "VmHWM")
            measured[(label, "hit")].peak_rss_mib = _rss_mib(caching, "VmHWM")
        load = os.getloadavg()[0]

    targets = {"relay": RELAY_TARGET, "fill": FILL_TARGET, "hit": HIT_TARGET}
    rows: list[dict[str, object]] = [
        {"path": "direct", "server": "docker-registry", "value": statistics.median(direct)}
        | {"runs": direct}
    ]
    for (label, kind), entry in measured.items():
        # The hit target holds in every round: its row shows the worst round.
        ratio = min(entry.ratios) if kind == "hit" else statistics.median(entry.ratios)
        row: dict[str, object] = {
            "path": kind,
            "server": label,
            "value": statistics.median(entry.rates),
            "ratio": ratio,
            "cpu_s_per_gib": statistics.median(entry.cpu_s_per_gib),
            "peak_rss_mib": entry.peak_rss_mib,
            "runs": entry.rates,
            "ratios": entry.ratios,
            "cpu_runs": entry.cpu_s_per_gib,
        }
        if label == CURRENT:
            row["target"] = f">= {targets[kind]:g}" + (" (worst)" if kind == "hit" else "")
            row["met"] = "yes" if ratio >= targets[kind] else "NO"
            row["case"] = f"{plan.mib} MiB blob"
            row["what"] = f"{kind} / direct" + (", worst round" if kind == "hit" else "")
        rows.append(row)
    # What verifying costs alone: a relay or a fill hashes every byte, so neither can pass
    # SHA-256's rate on one core, whatever else it does.
    rows.append(
        {
            "path": "SHA-256 alone",
            "server": "hashlib, one core",
            "value": hashing,
            "ratio": hashing / statistics.median(direct),
        }
    )
    order = ["direct", "SHA-256 alone", "relay", "fill", "hit"]
    rows.sort(key=lambda row: order.index(str(row["path"])))
    return SuiteResult(
        title=f"Blobs: a {plan.mib} MiB blob through MetaHub beside the upstream, in turns",
        columns=COLUMNS,
        rows=rows,
        parameters={"blob_mib": plan.mib, "rounds": plan.rounds, "baseline": baseline},
        notes=[
            f"{plan.rounds} rounds of curl downloads in turns; ratios are the median of each "
            "round's ratio to its direct download (hit: the worst round); CPU: the MetaHub "
            f"process's utime + stime per GiB; 1-minute load at the end: {load:.1f}",
        ],
    )

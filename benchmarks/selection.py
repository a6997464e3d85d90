"""Selection: what choosing entries for a machine type costs as indexes grow.

Synthetic indexes of 10, 100 and 1,000 entries over linux/amd64, linux/arm64 and
linux/ppc64le: one generic entry per platform, the rest built for archspec microarchitectures of
the platform's family, many with a CUDA capability too. Three machine types take turns, one per
call. Three paths are timed per size:

- `select`: `metahub.features.selection.select` on an already parsed index;
- `filter (warm)`: MetaHub's CPU work for an index and machine type it has not filtered yet
  (its result cache answers repeats), from upstream bytes to the served digest: `Index.parse`,
  `select`, `Index.with_entries`, sha256; with the lineage cache warm. The store's write is
  not included;
- `filter (cold)`: the same with MicroarchMatcher's lineage cache and the verdicts Matchers
  remembers per machine type cleared before each call: a machine type's first index.

The 1,000-entry `select` has a target (issue #13): under 2 ms at the median. It is judged on
the thread's CPU time, which leaves out what the hypervisor stole (the kernel here accounts
steal outside a task's run time): on this shared host the wall-clock median of the same code
ranged from 1.4 to 6.1 ms across the runs of one morning. Both medians are in the table.

Then the cache alone: one machine CPU looked up against every x86_64 target, warm and cold.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Callable

import archspec.cpu
import orjson

from benchmarks import Column, SuiteResult
from benchmarks.timing import FULL, QUICK, Target, Timing, measure
from metahub.features.matchers import _lineage_steps
from metahub.features.selection import MachineProfile, Matchers, select
from metahub.oci.index import Index

SIZES = (10, 100, 1000)
# A 1,000-entry index selects in under 2 ms at the median (issue #13).
TARGET_SIZE, TARGET_SELECT_US = 1000, 2000
# OCI architecture -> archspec family. Most entries are amd64, as in real indexes.
PLATFORMS = {"amd64": "x86_64", "arm64": "aarch64", "ppc64le": "ppc64le"}
PLATFORM_PATTERN = ("amd64", "amd64", "arm64", "amd64", "arm64", "ppc64le")
NVCAPS = (None, "7.0", "7.5", "8.0", "8.6", "8.9", "9.0")
MACHINE_TYPES = (
    MachineProfile.of("icelake-a100", ["cpu:icelake", "nvcap:8.0"]),
    MachineProfile.of("zen3-h100", ["cpu:zen3", "nvcap:9.0"]),
    MachineProfile.of("graviton3", ["cpu:neoverse_v1"], platforms=["linux/arm64"]),
)
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SEED = 20240601  # fixed, so every run measures the same indexes


def _feature_sets(family: str) -> list[list[str]]:
    """Every (microarchitecture, capability or none) pair of a family, in a fixed shuffle."""
    uarchs = sorted(
        name
        for name, target in archspec.cpu.TARGETS.items()
        if target.family.name == family and name != family
    )
    pairs = [
        [f"cpu:{uarch}", *([f"nvcap:{cap}"] if cap else [])]
        for uarch, cap in itertools.product(uarchs, NVCAPS)
    ]
    random.Random(f"{SEED}-{family}").shuffle(pairs)
    return pairs


def synthetic_index(size: int) -> bytes:
    """An OCI index of `size` entries; feature sets repeat (with new digests) once used up."""
    sets = {arch: _feature_sets(family) for arch, family in PLATFORMS.items()}
    seen = dict.fromkeys(PLATFORMS, 0)
    manifests = []
    for position in range(size):
        arch = PLATFORM_PATTERN[position % len(PLATFORM_PATTERN)]
        platform: dict[str, object] = {"architecture": arch, "os": "linux"}
        count = seen[arch]
        if count:  # the first entry of each platform is its generic build
            platform["features"] = sets[arch][(count - 1) % len(sets[arch])]
        seen[arch] += 1
        digest = hashlib.sha256(f"{SEED}-{position}".encode()).hexdigest()
        manifests.append(
            {
                "mediaType": MANIFEST,
                "digest": f"sha256:{digest}",
                "size": 1000 + position,
                "platform": platform,
            }
        )
    document = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }
    return orjson.dumps(document)


def _round_robin(work: Callable[[MachineProfile], object]) -> Callable[[], object]:
    machines = itertools.cycle(MACHINE_TYPES)
    return lambda: work(next(machines))


def targets(data: bytes) -> dict[str, Target]:
    """The three paths timed for one index, by the name the table shows."""
    matchers = Matchers()
    parsed = Index.parse(data)

    def filter_once(machine: MachineProfile) -> str:
        index = Index.parse(data)
        served = index.with_entries(select(index, machine, matchers).kept)
        return hashlib.sha256(served).hexdigest()

    def forget() -> None:
        _lineage_steps.cache_clear()
        matchers.forget_verdicts()

    full = _round_robin(filter_once)
    return {
        "select": Target(_round_robin(lambda machine: select(parsed, machine, matchers))),
        "filter (warm)": Target(full),
        "filter (cold)": Target(full, before=forget),
    }


COLUMNS = [
    Column("entries", "Entries", ","),
    Column("path", "Path"),
    Column("median_us", "Median µs", ",.1f"),
    Column("cpu_median_us", "CPU median µs", ",.1f"),
    Column("p99_us", "p99 µs", ",.1f"),
    Column("calls_per_s", "Calls/s", ",.0f"),
    Column("vs_warm", "Cold/warm", ".2f"),
    Column("calls", "Calls", ","),
    Column("target", "Target"),
    Column("met", "Met"),
]


def lineage_targets() -> dict[str, Target]:
    """One machine CPU against every x86_64 target: what a cold cache recomputes per request."""
    required = sorted(n for n, t in archspec.cpu.TARGETS.items() if t.family.name == "x86_64")

    def lookups() -> None:
        for name in required:
            _lineage_steps("icelake", name)

    label = f"{len(required)} lookups"
    return {
        f"{label} (warm)": Target(lookups),
        f"{label} (cold)": Target(lookups, before=_lineage_steps.cache_clear),
    }


def _row(
    size: int | None, path: str, timing: Timing, warm: Timing | None = None
) -> dict[str, object]:
    return {
        "entries": size,
        "path": path,
        "median_us": timing.median_us,
        "cpu_median_us": timing.cpu_median_us,
        "p99_us": timing.p99_us,
        "mean_us": timing.mean_us,
        "calls_per_s": timing.calls_per_s,
        "vs_warm": timing.median_us / warm.median_us if warm else None,
        "calls": timing.calls,
    }


def run(quick: bool) -> SuiteResult:
    budget = QUICK if quick else FULL
    rows = []
    for size in SIZES:
        # One call per machine type settles the block after a cold one: that leaves the cache
        # holding only its last machine type's lineage, which a warm block must not pay for.
        timings = measure(targets(synthetic_index(size)), budget, settle=len(MACHINE_TYPES))
        warm = timings["filter (warm)"]
        for path, timing in timings.items():
            row = _row(size, path, timing, warm if path == "filter (cold)" else None)
            if size == TARGET_SIZE and path == "select":
                row["target"] = f"< {TARGET_SELECT_US:,} µs of CPU"
                row["met"] = "yes" if timing.cpu_median_us < TARGET_SELECT_US else "NO"
                row["value"] = timing.cpu_median_us  # what the targets table shows
                row["case"] = f"{size:,} entries"
                row["what"] = f"select, CPU median µs (wall median {timing.median_us:,.0f})"
            rows.append(row)
    warm_lookups, cold_lookups = measure(lineage_targets(), budget, settle=1).items()
    rows.append(_row(None, *warm_lookups))
    rows.append(_row(None, *cold_lookups, warm_lookups[1]))
    return SuiteResult(
        title="Selection: one machine type's choice from an index, per call",
        columns=COLUMNS,
        rows=rows,
        parameters={
            "sizes": list(SIZES),
            "platforms": [f"linux/{arch}" for arch in PLATFORMS],
            "machine_types": {m.name: [str(f) for f in m.features] for m in MACHINE_TYPES},
            "archspec_version": archspec.__version__,
            "budget": {
                "warmup_s": budget.warmup_s,
                "measure_s": budget.measure_s,
                "min_calls": budget.min_calls,
                "rounds": budget.rounds,
            },
        },
        notes=[
            "filter = Index.parse + select + Index.with_entries + sha256 (MetaHub's work for an "
            "index and machine type it has not filtered yet); cold = lineage cache and "
            "remembered verdicts cleared before each call; machine types take turns",
        ],
    )

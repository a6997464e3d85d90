"""`python -m benchmarks [--quick] [suite ...]`: run suites, print tables, record JSON.

Each run writes benchmarks/results/<suite>-<UTC timestamp>.json. A full run also updates
latest.json (suite -> its latest full result), the file docs cite; --quick results are only
a check that a suite works, so they never replace a full one there.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from benchmarks import SUITES, SuiteResult, load

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).parent.parent


def machine() -> dict[str, object]:
    """What the numbers depend on, recorded next to them."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),  # what `nproc` prints: the CPUs we may use
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        # Other work on the machine skews timings; the 1-minute load says how much there was.
        "load_average_1m": os.getloadavg()[0],
        "commit": _commit(),
    }


def cpu_times() -> tuple[int, int] | None:
    """(steal, busy) of every CPU's time since boot, in ticks, from /proc/stat; None without it.

    Steal is time the hypervisor gave this VM's CPUs to other guests while they had work: on a
    shared host it, more than the load average, says how far a run's absolute rates moved."""
    try:
        line = Path("/proc/stat").read_text().split("\n", 1)[0]
    except OSError:
        return None
    return steal_and_busy(line)


def steal_and_busy(line: str) -> tuple[int, int] | None:
    """`cpu user nice system idle iowait irq softirq steal ...` -> (steal, every time but idle
    and iowait: what the CPUs ran or were kept from running); guest time is in user and nice."""
    fields = line.split()
    if fields[:1] != ["cpu"] or len(fields) < 9 or not all(v.isdigit() for v in fields[1:9]):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return steal, user + nice + system + irq + softirq + steal


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Of the CPU time this VM wanted between two readings, the part the hypervisor took."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def _steal_text(share: float | None) -> str:
    return "" if share is None else f"; the hypervisor took {share:.0%} of the CPU time wanted"


def _commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def _cell(value: object, fmt: str) -> str:
    if value is None:
        return ""
    if fmt and isinstance(value, int | float):
        return format(value, fmt)
    return str(value)


def table(result: SuiteResult, host: dict[str, object], quick: bool) -> Table:
    caption = [
        *result.notes,
        f"{host['cpu_model']}, nproc {host['nproc']}, Python {host['python']}"
        + (" (--quick: not for citing)" if quick else ""),
    ]
    output = Table(title=result.title, caption="\n".join(caption))
    for column in result.columns:
        numeric = bool(column.fmt)
        output.add_column(column.header, justify="right" if numeric else "left")
    for row in result.rows:
        output.add_row(*(_cell(row.get(c.key), c.fmt) for c in result.columns))
    return output


def targets_table(
    results: dict[str, SuiteResult], host: dict[str, object], steal: float | None = None
) -> Table | None:
    """Every row of the run that has a target, side by side: what `make bench` answers to."""
    output = Table(
        title="Targets: every row with one, from this run",
        caption=f"1-minute load {host['load_average_1m']:.2f} when the run began, "
        f"{os.getloadavg()[0]:.2f} at its end, on {host['nproc']} CPUs{_steal_text(steal)}",
    )
    # "Floor": the same case through the serving stack alone (benchmarks/floor.py), where the
    # suite measured it: how far the host of the hour lets any code of MetaHub's go.
    for header in ("Suite", "Case", "What", "Measured", "Floor", "Target", "Met"):
        output.add_column(header, justify="right" if header in ("Measured", "Floor") else "left")
    count = 0
    for name, result in results.items():
        for row in result.rows:
            if row.get("target") is None:
                continue
            measured = next(
                (row[key] for key in ("ratio", "value", "median_us") if row.get(key) is not None),
                None,
            )
            output.add_row(
                name,
                str(row.get("case", "")),
                str(row.get("what") or row.get("server", row.get("path", ""))),
                _cell(measured, ",.2f"),
                _cell(row.get("floor"), ",.2f"),
                str(row["target"]),
                str(row.get("met", "")),
            )
            count += 1
    return output if count else None


def _write_json(path: Path, document: object) -> None:
    # Write then rename, so an interrupted run never leaves half a file to be committed.
    data = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        tmp.write(data)
    Path(tmp.name).chmod(0o644)
    Path(tmp.name).replace(path)


def record(
    results_dir: Path,
    name: str,
    result: SuiteResult,
    host: dict[str, object],
    quick: bool,
    steal: float | None = None,
) -> Path:
    now = datetime.now(UTC)
    document = {
        "suite": name,
        "title": result.title,
        "timestamp": now.isoformat(timespec="seconds"),
        "quick": quick,
        "machine": host,
        "steal_share": steal,  # of the CPU time wanted while this suite ran
        "parameters": result.parameters,
        "columns": [{"key": c.key, "header": c.header, "format": c.fmt} for c in result.columns],
        "rows": result.rows,
        "notes": result.notes,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    _write_json(path, document)
    if not quick:
        latest_path = results_dir / "latest.json"
        latest = orjson.loads(latest_path.read_bytes()) if latest_path.exists() else {}
        _write_json(latest_path, {**latest, name: document})
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("suites", nargs="*", metavar="suite", help=f"of {', '.join(SUITES)}")
    parser.add_argument("--quick", action="store_true", help="a short run to check the suites")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where JSON goes")
    args = parser.parse_args(argv)
    unknown = [name for name in args.suites if name not in SUITES]
    if unknown:
        parser.error(f"unknown suite {', '.join(unknown)}; known: {', '.join(SUITES)}")
    # Piped output (CI logs, tee) gets a width the table fits in rather than rich's 80.
    console = Console() if sys.stdout.isatty() else Console(width=120)
    host = machine()
    results: dict[str, SuiteResult] = {}
    run_start = cpu_times()
    for name in args.suites or list(SUITES):
        suite_start = cpu_times()
        with console.status(f"running {name}{' (quick)' if args.quick else ''}"):
            result = results[name] = load(name)(args.quick)
        steal = steal_share(suite_start, cpu_times())
        console.print(table(result, host, args.quick))
        if steal is not None:
            console.print(f"The hypervisor took {steal:.0%} of the CPU time wanted (steal)")
        path = record(args.results, name, result, host, args.quick, steal)
        console.print(f"wrote {path}")
    summary = targets_table(results, host, steal_share(run_start, cpu_times()))
    if summary is not None:
        console.print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

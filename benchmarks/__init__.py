"""MetaHub's benchmarks, run with `python -m benchmarks [--quick] [suite ...]` or `make bench`.

A suite is a module with `run(quick: bool) -> SuiteResult`. Adding one is one line in SUITES;
modules are imported only when their suite runs, so a suite that needs an outside tool (wrk)
costs nothing to the others. The runner prints each result as a table and records it as JSON
under benchmarks/results/, where results are committed so that docs can cite them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

# suite name -> module defining `run(quick: bool) -> SuiteResult`, in the order they run.
SUITES: dict[str, str] = {
    "selection": "benchmarks.selection",
    "serving": "benchmarks.serving",
    "blobs": "benchmarks.blobs",
}


@dataclass(frozen=True, slots=True)
class Column:
    """One table column: the row key it shows, its header, and a format spec for numbers."""

    key: str
    header: str
    fmt: str = ""


@dataclass(slots=True)
class SuiteResult:
    """What a suite measured: rows of raw numbers (the JSON keeps them unformatted)."""

    title: str
    columns: list[Column]
    rows: list[dict[str, object]]
    parameters: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


SuiteRun = Callable[[bool], SuiteResult]


def load(name: str) -> SuiteRun:
    """The `run` function of a registered suite."""
    run: SuiteRun = importlib.import_module(SUITES[name]).run
    return run

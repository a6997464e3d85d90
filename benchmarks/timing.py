"""Timing calls one at a time with perf_counter_ns, for micro-benchmarks of in-process code.

Each call is also timed by the calling thread's CPU clock. On a virtual machine whose
hypervisor takes the CPU away now and then (steal), the wall clock counts that time and the
thread's CPU clock does not (the kernel leaves steal out of a task's run time): the CPU median
says what a call costs when the wall clock says how long it took on this host at this hour.

Targets that are compared are timed interleaved, in rounds, so that a neighbour's load or a
frequency change while the benchmark runs slows all of them alike instead of one of them: on a
shared machine, timing them one after the other can even turn a comparison round.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Call = Callable[[], object]


@dataclass(frozen=True, slots=True)
class Budget:
    """How long to warm up and to measure each target, and bounds on the calls timed."""

    warmup_s: float
    measure_s: float
    min_calls: int
    max_calls: int
    rounds: int


# 100 calls at least, so that p99 is not simply the slowest call.
FULL = Budget(warmup_s=0.05, measure_s=0.25, min_calls=100, max_calls=200_000, rounds=20)
# Enough to see that a suite works and roughly what it costs, not to cite.
QUICK = Budget(warmup_s=0.01, measure_s=0.03, min_calls=20, max_calls=20_000, rounds=2)


@dataclass(frozen=True, slots=True)
class Target:
    """A call to time; `before` runs ahead of each call, outside the timing."""

    call: Call
    before: Call | None = None


@dataclass(frozen=True, slots=True)
class Timing:
    calls: int
    median_us: float
    p99_us: float
    mean_us: float
    cpu_median_us: float  # the calling thread's CPU time, steal left out

    @property
    def calls_per_s(self) -> float:
        # From the mean, not the median: throughput pays for the slow calls too.
        return 1e6 / self.mean_us if self.mean_us else 0.0


def measure(targets: Mapping[str, Target], budget: Budget, *, settle: int = 0) -> dict[str, Timing]:
    """Time each target interleaved: `budget.rounds` rounds, each a block of calls per target.

    Each target is warmed up first (caches, allocator, branch predictors) and gets as many calls
    as fit in its budget, within its bounds. A block that follows one of a target with a
    `before` starts with `settle` untimed calls, so that the state `before` leaves behind (a
    cleared cache) is not charged to the next target. The
    collector is off while timing, as in timeit, so that a collection triggered by earlier
    garbage does not land on one unlucky sample.
    """
    blocks: dict[str, int] = {}
    for name, target in targets.items():
        _run_for(target, budget.warmup_s)
        per_call_ns = max(_run_for(target, budget.warmup_s), 1)
        calls = int(budget.measure_s * 1e9 / per_call_ns)
        calls = min(max(calls, budget.min_calls), budget.max_calls)
        blocks[name] = -(-calls // budget.rounds)  # ceiling: at least min_calls in all
    samples: dict[str, list[tuple[int, int]]] = {name: [] for name in targets}
    gc.collect()
    gc.disable()
    try:
        dirty = False
        for _ in range(budget.rounds):
            for name, target in targets.items():
                for _ in range(settle if dirty else 0):
                    _timed(target)
                samples[name].extend(_timed(target) for _ in range(blocks[name]))
                dirty = target.before is not None
    finally:
        gc.enable()
    return {name: _summary(values) for name, values in samples.items()}


def _timed(target: Target) -> tuple[int, int]:
    """The call's wall-clock and CPU nanoseconds; the CPU clock's reads (a system call each)
    lie outside the wall clock's."""
    if target.before is not None:
        target.before()
    cpu = time.thread_time_ns()
    start = time.perf_counter_ns()
    target.call()
    wall = time.perf_counter_ns() - start
    return wall, time.thread_time_ns() - cpu


def _run_for(target: Target, seconds: float) -> int:
    """Call repeatedly for about `seconds` (at least twice); return the median ns per call.

    The median, because one call preempted by a neighbour would otherwise shrink the number
    of calls timed.
    """
    samples: list[int] = []
    spent = 0
    while len(samples) < 2 or spent < seconds * 1e9:
        samples.append(_timed(target)[0])
        spent += samples[-1]
    return int(statistics.median(samples))


def _summary(timed: list[tuple[int, int]]) -> Timing:
    samples = sorted(wall for wall, _ in timed)
    calls = len(samples)
    return Timing(
        calls=calls,
        median_us=statistics.median(samples) / 1000,
        p99_us=samples[min(calls - 1, int(calls * 0.99))] / 1000,
        mean_us=statistics.fmean(samples) / 1000,
        cpu_median_us=statistics.median(cpu for _, cpu in timed) / 1000,
    )

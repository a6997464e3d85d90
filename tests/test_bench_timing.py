"""The benchmarks' call timer reports the calling thread's CPU time beside the wall clock."""

from __future__ import annotations

import time

from benchmarks.timing import Budget, Target, measure

BUDGET = Budget(warmup_s=0.0, measure_s=0.0, min_calls=6, max_calls=6, rounds=2)


def _sleeps() -> None:
    time.sleep(0.005)


def _works() -> None:
    start = time.thread_time_ns()
    while time.thread_time_ns() - start < 2_000_000:
        pass


def test_a_call_that_waits_costs_little_cpu_and_one_that_works_costs_its_cpu() -> None:
    timings = measure({"sleeps": Target(_sleeps), "works": Target(_works)}, BUDGET)

    sleeps, works = timings["sleeps"], timings["works"]
    assert sleeps.calls == works.calls == 6
    assert sleeps.median_us >= 5000
    assert sleeps.cpu_median_us < 1000  # the sleep is not the thread's CPU time
    assert works.cpu_median_us >= 2000
    assert works.median_us >= 2000  # the wall clock runs at least as long as the work

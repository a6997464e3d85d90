"""make bench records how much CPU time the hypervisor took while each suite ran."""

from __future__ import annotations

import pytest
from benchmarks.__main__ import steal_and_busy, steal_share


def test_steal_is_the_eighth_time_of_the_cpu_line_and_busy_all_but_idle_and_iowait() -> None:
    line = "cpu  483361 569 129192 7795346 5408 0 24885 42750 0 0"
    busy = 483361 + 569 + 129192 + 0 + 24885 + 42750
    assert steal_and_busy(line) == (42750, busy)


@pytest.mark.parametrize(
    "line",
    ["cpu0 1 2 3 4 5 6 7 8", "cpu 1 2 3", "intr 1 2 3 4 5 6 7 8", "cpu 1 2 3 4 5 6 7 x", ""],
)
def test_anything_else_is_no_reading(line: str) -> None:
    assert steal_and_busy(line) is None


def test_the_share_is_of_the_time_between_two_readings() -> None:
    assert steal_share((100, 1000), (400, 2000)) == pytest.approx(0.3)
    assert steal_share((100, 1000), (100, 1000)) is None  # no time passed
    assert steal_share(None, (100, 1000)) is None

"""make bench's summary: every row with a target, and the floor beside those the floor ran."""

from __future__ import annotations

from benchmarks import Column, SuiteResult
from benchmarks.__main__ import targets_table
from rich.console import Console

HOST = {"load_average_1m": 0.5, "nproc": 2}


def rendered_rows(result: SuiteResult) -> dict[str, list[str]]:
    """The summary's cells by the row's "What", read back from the rendered table."""
    table = targets_table({"serving": result}, HOST)
    assert table is not None
    console = Console(width=200, record=True)
    console.print(table)
    assert [column.header for column in table.columns] == [
        "Suite", "Case", "What", "Measured", "Floor", "Target", "Met",
    ]  # fmt: skip
    cells = [list(column.cells) for column in table.columns]
    return {row[2]: list(row) for row in zip(*cells, strict=True)}


def test_the_floor_stands_beside_a_target_row_that_has_one_and_is_blank_elsewhere() -> None:
    result = SuiteResult(
        title="serving",
        columns=[Column("case", "Case")],
        rows=[
            {"case": "4 cold", "server": "MetaHub / direct", "ratio": 2.36, "floor": 1.547}
            | {"target": "<= 1.5", "met": "NO"},
            {"case": "6 burst", "server": "upstream manifest GETs", "value": 1}
            | {"target": "<= 1", "met": "yes"},
            {"case": "4 cold", "server": "floor / direct", "ratio": 1.547},  # no target
        ],
    )
    rows = rendered_rows(result)
    assert rows["MetaHub / direct"] == [
        "serving", "4 cold", "MetaHub / direct", "2.36", "1.55", "<= 1.5", "NO",
    ]  # fmt: skip
    assert rows["upstream manifest GETs"][3:5] == ["1.00", ""]
    assert "floor / direct" not in rows

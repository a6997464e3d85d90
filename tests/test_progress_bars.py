"""The byte bars `metahub push` and `metahub warm` share: shown on a terminal, gone off one."""

from __future__ import annotations

import io

from rich.console import Console

from metahub.cli.warm_progress import WarmProgress
from metahub.publish.progress import RichReporter

DIGEST = "sha256:" + "ab" * 32


def console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=120, color_system=None), out


def test_a_push_on_a_terminal_shows_a_bar_per_blob_and_a_line_when_it_is_done() -> None:
    terminal, out = console(terminal=True)
    with RichReporter(terminal) as reporter:
        reporter.blob_started(DIGEST, 2048, "local")
        reporter.blob_advanced(DIGEST, 1024)
        reporter.blob_advanced(DIGEST, 1024)
        reporter.blob_done(DIGEST, "copied")
    shown = out.getvalue()
    assert "copying sha256:abababababab from local" in shown
    assert "sha256:abababababab: copied" in shown


def test_a_quiet_push_or_one_off_a_terminal_prints_no_bars() -> None:
    for terminal, quiet in ((True, True), (False, False)):
        plain, out = console(terminal)
        with RichReporter(plain, quiet=quiet) as reporter:
            reporter.blob_started(DIGEST, 2048, "local")
            reporter.blob_advanced(DIGEST, 2048)
            reporter.blob_done(DIGEST, "copied")
        assert out.getvalue() == ""


def test_warming_on_a_terminal_shows_the_bar_then_the_blob_line() -> None:
    terminal, out = console(terminal=True)
    with WarmProgress(as_json=False, console=terminal) as progress:
        progress.show({"event": "blob", "digest": DIGEST, "size": 4096})
        progress.show({"event": "progress", "digest": DIGEST, "bytes": 2048})
        progress.show({"event": "blob_done", "digest": DIGEST, "size": 4096, "result": "fetched"})
    shown = out.getvalue()
    assert "fetching sha256:abababababab" in shown
    assert "sha256:abababababab 4.0 KiB: fetched" in shown


def test_warming_off_a_terminal_prints_the_lines_without_bars() -> None:
    plain, out = console(terminal=False)
    with WarmProgress(as_json=False, console=plain) as progress:
        progress.show({"event": "blob", "digest": DIGEST, "size": 4096})
        progress.show({"event": "progress", "digest": DIGEST, "bytes": 2048})
        progress.show({"event": "blob_done", "digest": DIGEST, "size": 4096, "result": "cached"})
    assert out.getvalue() == "sha256:abababababab 4.0 KiB: cached\n"

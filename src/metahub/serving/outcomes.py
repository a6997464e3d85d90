"""What a pull gets, in one word: the classification coverage, warming and metrics share.

- `matched`: a chosen entry carries features the machine type satisfies (an optimized build);
- `generic`: only featureless entries fit (the fallback build, or an image without features);
- `none`: nothing fits, a pull is `404 MANIFEST_UNKNOWN`;
- `unfiltered`: the request named no machine type (anonymous), so the upstream's index is served.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Literal, get_args

from prometheus_client import Counter

from metahub import metrics
from metahub.features.selection import MachineProfile, Verdict
from metahub.oci import mediatypes
from metahub.oci.index import Entry, Index

if TYPE_CHECKING:
    from metahub.serving.manifests import Filtering

Outcome = Literal["matched", "generic", "none", "unfiltered"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)

# The label of requests served for no machine type; machine type names never contain "/".
UNFILTERED_LABEL = "-"
# Distinct (machine type, outcome) series kept looked up; beyond it the lookups start over.
_MAX_SERIES = 4096


def outcome_of(filtering: Filtering) -> Outcome:
    """`matched`, `generic` or `none` for what selection made of an index for a machine type."""
    if filtering.served is None:
        return "none"
    if not filtering.filtered:
        return "generic"
    matched = any(v is not None and v.satisfied > 0 for _, v in chosen_entries(filtering))
    return "matched" if matched else "generic"


def chosen_entries(filtering: Filtering) -> Iterator[tuple[Entry, Verdict | None]]:
    """The images a pull of what was served runs, through nested indexes, with the verdict that
    chose each (None where the index had nothing to choose); attestations left out, since they
    describe an image rather than run. An image that is no index is its own single entry."""
    upstream = filtering.upstream
    if filtering.served is None:
        return
    if not mediatypes.is_index(upstream.media_type):
        descriptor = {"mediaType": upstream.media_type, "digest": upstream.digest}
        yield Entry(0, descriptor, None, ()), None
        return
    entries: Sequence[Entry] = filtering.kept
    if not filtering.filtered:  # served as the upstream has it: every entry stands
        entries = Index.parse(upstream.data).entries
    verdicts = {v.entry.position: v for v in filtering.verdicts}
    for entry in entries:
        if entry.attestation:
            continue
        nested = filtering.nested.get(entry.position)
        if nested is not None:
            yield from chosen_entries(nested)
        else:
            yield entry, verdicts.get(entry.position)


def machine_type_label(profile: MachineProfile | None) -> str:
    """A bounded label: a profile login (`hpc/cpu=zen3`) counts under its account (`hpc/*`)."""
    if profile is None:
        return UNFILTERED_LABEL
    account, slash, _ = profile.name.partition("/")
    return f"{account}/*" if slash else profile.name


class PullCounter:
    """`metahub_manifest_pulls_total{machine_type, outcome}`, with label lookups kept."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, str], Counter] = {}

    def count(self, profile: MachineProfile | None, outcome: Outcome) -> None:
        label = machine_type_label(profile)
        series = self._series.get((label, outcome))
        if series is None:
            if len(self._series) >= _MAX_SERIES:
                self._series.clear()
            series = self._series[label, outcome] = metrics.MANIFEST_PULLS.labels(label, outcome)
        metrics.count(series)

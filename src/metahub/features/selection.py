"""Choosing, for each platform of an index, the entry that fits a machine best.

Runtimes pick from an index by os/architecture/variant only and take the first match, so the
filtered index must hold at most one entry per platform. For each platform group the entry kept
is the fitting one with the most features satisfied, then the closest fit (most derived
microarchitecture, nearest capability), then the earliest in the index. Entries without features
are the generic fallback: they fit every machine and satisfy nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from metahub.features.matchers import (
    BUILTIN_MATCHERS,
    DEFAULT_KEY_MATCHERS,
    ExactMatcher,
    Fit,
    MachineFeatures,
    Matcher,
    MicroarchMatcher,
)
from metahub.features.model import Feature, InvalidFeature, group_by_key
from metahub.oci.index import Entry, Index, PlatformKey

ATTESTATION_TYPE = "attestation-manifest"
REFERENCE_TYPE = "vnd.docker.reference.type"
REFERENCE_DIGEST = "vnd.docker.reference.digest"


@dataclass(frozen=True, slots=True)
class MachineProfile:
    """The features one machine type declares, ready for matching."""

    name: str
    features: tuple[Feature, ...]
    by_key: MachineFeatures = field(compare=False)

    @classmethod
    def of(cls, name: str, features: tuple[str, ...] | list[str]) -> MachineProfile:
        parsed = tuple(Feature.parse(f) for f in features)
        return cls(name, parsed, group_by_key(parsed))

    def describe(self) -> str:
        return ", ".join(map(str, self.features)) or "no features"


class Matchers:
    """Which matcher judges which feature key."""

    def __init__(
        self,
        key_matchers: Mapping[str, str] | None = None,
        cpu_aliases: Mapping[str, str] | None = None,
    ) -> None:
        names = {**DEFAULT_KEY_MATCHERS, **(key_matchers or {})}
        self._default: Matcher = ExactMatcher()
        self._by_key: dict[str, Matcher] = {}
        for key, name in names.items():
            if name == "microarch":
                self._by_key[key] = MicroarchMatcher(cpu_aliases)
            else:
                self._by_key[key] = BUILTIN_MATCHERS[name]()

    def for_key(self, key: str) -> Matcher:
        return self._by_key.get(key, self._default)


@dataclass(slots=True)
class Verdict:
    """Why an entry was kept or dropped: the explanation behind every choice."""

    entry: Entry
    fits: bool
    satisfied: int = 0
    distance: float = 0.0
    reasons: list[str] = field(default_factory=list)
    chosen: bool = False

    @property
    def rank(self) -> tuple[int, float, int]:
        return (self.satisfied, -self.distance, -self.entry.position)


class NoMatchingEntry(LookupError):
    def __init__(self, machine: MachineProfile, offered: list[str]) -> None:
        self.machine = machine
        self.offered = offered
        offered_text = "; ".join(offered) or "none"
        super().__init__(
            f"no entry of this index fits machine type {machine.name!r} "
            f"({machine.describe()}); entries offer: {offered_text}"
        )


@dataclass(slots=True)
class Selection:
    kept: list[Entry]
    verdicts: list[Verdict]


def judge(entry: Entry, machine: MachineProfile, matchers: Matchers) -> Verdict:
    verdict = Verdict(entry, fits=True)
    for text in entry.features:
        try:
            feature = Feature.parse(text)
        except InvalidFeature as exc:
            verdict.fits = False
            verdict.reasons.append(str(exc))
            continue
        fit: Fit = matchers.for_key(feature.key).fit(feature.key, feature.value, machine.by_key)
        if fit.ok:
            verdict.satisfied += 1
            verdict.distance += fit.distance
        else:
            verdict.fits = False
            verdict.reasons.append(fit.reason)
    return verdict


def select(index: Index, machine: MachineProfile, matchers: Matchers) -> Selection:
    """Keep one best-fitting entry per platform; raise NoMatchingEntry if none is left."""
    verdicts = [judge(entry, machine, matchers) for entry in index.entries]
    groups: dict[PlatformKey, list[Verdict]] = {}
    attestations: list[Verdict] = []
    unplatformed: list[Verdict] = []
    for verdict in verdicts:
        entry = verdict.entry
        if entry.annotations.get(REFERENCE_TYPE) == ATTESTATION_TYPE:
            attestations.append(verdict)
        elif entry.platform is None:
            unplatformed.append(verdict)
        else:
            groups.setdefault(entry.platform, []).append(verdict)

    for group in groups.values():
        fitting = [v for v in group if v.fits]
        if fitting:
            max(fitting, key=lambda v: v.rank).chosen = True
    chosen_digests = {v.entry.digest for v in verdicts if v.chosen}
    if not chosen_digests:
        raise NoMatchingEntry(machine, _offered(index))
    # An attestation describes one image; it is worth keeping only with that image.
    for verdict in attestations:
        verdict.chosen = verdict.entry.annotations.get(REFERENCE_DIGEST) in chosen_digests
        if not verdict.chosen:
            verdict.reasons.append("attestation of an entry that was not chosen")
    for verdict in unplatformed:
        verdict.chosen = True
    for verdict in groups_members(groups):
        if verdict.fits and not verdict.chosen:
            verdict.reasons.append("another entry for this platform fits better")
    return Selection([v.entry for v in verdicts if v.chosen], verdicts)


def groups_members(groups: dict[PlatformKey, list[Verdict]]) -> list[Verdict]:
    return [verdict for group in groups.values() for verdict in group]


def _offered(index: Index) -> list[str]:
    offered = []
    for entry in index.entries:
        if entry.platform is None:
            continue
        features = ",".join(entry.features) or "generic"
        offered.append(f"{entry.platform}: {features}")
    return offered

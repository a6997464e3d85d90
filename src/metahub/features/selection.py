"""Choosing, for each platform of an index, the entry that fits a machine best.

Runtimes pick from an index by os/architecture/variant only and take the first match, so the
filtered index must hold at most one entry per platform. For each platform group the entry kept
is the fitting one with the most features satisfied, then the closest fit (most derived
microarchitecture, nearest capability or version), then the earliest in the index. Entries
without features are the generic fallback: they fit every machine and satisfy nothing, so they
win only when no entry with features fits.

For a machine type with a `cpu`, architecture variants that are levels of its lineage
(`amd64/v3`, `arm64/v8.2`) are one platform group whose entries require that level
(`features/levels.py`); the chosen one is served under the baseline platform.

A machine type in `exact` mode (the original MetaHub's rule) keeps an entry only when its
feature set equals the machine's. A machine type that declares `platforms` keeps no other.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from metahub.features.levels import CPU_KEY, Levels
from metahub.features.matchers import Fit, MachineFeatures, MatcherRegistry, MicroarchMatcher
from metahub.features.model import Feature, InvalidFeature, group_by_key, parse_feature
from metahub.oci.index import REFERENCE_DIGEST, Entry, EntryKind, Index
from metahub.oci.platform import DEFAULT_PLATFORM, PlatformKey, normalize_platform, parse_platform
from metahub.oci.repository_patterns import EVERYTHING, RepositoryPatterns

Mode = Literal["best", "exact"]
MODES: tuple[Mode, ...] = get_args(Mode)


@dataclass(frozen=True, slots=True)
class MachineProfile:
    """What one machine type declares, ready for matching."""

    name: str
    features: tuple[Feature, ...]
    by_key: MachineFeatures = field(compare=False)
    mode: Mode = "best"
    platforms: tuple[PlatformKey, ...] = ()
    # Changes whenever what this machine type gets could change: part of every cache key.
    revision: str = field(default="", compare=False)
    # Which repositories it may pull; not part of the revision, since it changes no selection.
    repositories: RepositoryPatterns = field(default=EVERYTHING, compare=False)

    @classmethod
    def of(
        cls,
        name: str,
        features: Iterable[str],
        *,
        mode: Mode = "best",
        platforms: Iterable[str] = (),
        repositories: Iterable[str] = (),
    ) -> MachineProfile:
        parsed = tuple(Feature.parse(f) for f in features)
        declared = tuple(parse_platform(p) for p in platforms)
        revision = hashlib.sha256(
            repr((name, sorted(map(str, parsed)), mode, [str(p) for p in declared])).encode()
        ).hexdigest()[:16]
        patterns = RepositoryPatterns.of(repositories)
        return cls(name, parsed, group_by_key(parsed), mode, declared, revision, patterns)

    def describe(self) -> str:
        return ", ".join(map(str, self.features)) or "no features"

    @property
    def preferred_platform(self) -> PlatformKey:
        """The platform a client that takes no index gets: the first declared one."""
        return self.platforms[0] if self.platforms else DEFAULT_PLATFORM

    def allows(self, platform: PlatformKey) -> bool:
        if not self.platforms:
            return True
        platform = normalize_platform(platform)
        return any(
            (p.os, p.architecture, p.variant)
            == (platform.os, platform.architecture, platform.variant)
            for p in self.platforms
        )


@dataclass(frozen=True, slots=True)
class FeatureVerdict:
    """What an entry's feature set (its platform aside) makes of one machine type."""

    fits: bool
    satisfied: int
    distance: float
    reasons: tuple[str, ...]


# Feature sets judged per machine type that a Matchers remembers, at most: a 1,000-entry index
# repeats a few hundred sets, and a machine type's next index mostly repeats them again.
FEATURE_VERDICTS = 65536


class Matchers(MatcherRegistry):
    """The registry, fitting a feature with the aliases configured for its key applied first.

    It also remembers, per machine type revision, what each feature set made of it: selection
    judges an index's entries by their feature sets, so each distinct set is parsed and matched
    once per machine type rather than once per entry and request. Whole entry verdicts (platform,
    features and the level its variant requires) are remembered the same way, keyed by the
    entry's platform and features, and the levels a machine type decides by its revision.
    """

    def __init__(
        self,
        key_matchers: Mapping[str, str] | None = None,
        aliases: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        super().__init__(key_matchers, aliases)
        self._verdicts: dict[tuple[str, tuple[str, ...]], FeatureVerdict] = {}
        self._fits: dict[tuple[str, Feature], Fit] = {}
        self._levels: dict[str, Levels] = {}
        # revision -> entry kind (platform, features, attestation) -> the verdict on every
        # entry of that kind: the level rule reads the platform's variant, so the features
        # alone do not say it.
        self._entries: dict[str, dict[EntryKind, _Judged]] = {}
        self._entries_count = 0

    def judge_features(self, features: tuple[str, ...], machine: MachineProfile) -> FeatureVerdict:
        """The verdict on a feature set for `machine`, remembered when it has a revision."""
        if not machine.revision:  # built by hand, without the key that says what it declares
            return _judge_features(features, machine, self.fit)
        key = (machine.revision, features)
        verdict = self._verdicts.get(key)
        if verdict is None:
            if len(self._verdicts) >= FEATURE_VERDICTS:
                self._verdicts.clear()
                self._fits.clear()
            revision = machine.revision

            def fit(feature: Feature, by_key: MachineFeatures) -> Fit:
                # Sets share their features (cpu:zen2 with and without an nvcap): each feature
                # is matched once per machine type too.
                fit_key = (revision, feature)
                known = self._fits.get(fit_key)
                if known is None:
                    known = self._fits[fit_key] = self.fit(feature, by_key)
                return known

            verdict = self._verdicts[key] = _judge_features(features, machine, fit)
        return verdict

    def forget_verdicts(self) -> None:
        """Judge every feature set afresh from now on (what a cold start costs is measured so)."""
        self._verdicts.clear()
        self._fits.clear()
        self._levels.clear()
        self._entries.clear()
        self._entries_count = 0

    def judged(
        self, entries: Iterable[Entry], machine: MachineProfile, levels: Levels | None
    ) -> list[_Judged]:
        """What `_judge_entry` makes of each entry, remembered per machine type revision and
        entry platform and features: a 1,000-entry index repeats a few dozen of them. One loop
        for the whole index: it runs per entry on every selection, so it makes no call that a
        lookup can spare."""
        if not machine.revision:
            return [_Judged.of(_judge_entry(entry, machine, self, levels)) for entry in entries]
        known = self._entries.get(machine.revision)
        if known is None:
            known = self._entries[machine.revision] = {}
        judged = []
        for entry in entries:
            verdict = known.get(entry.kind)
            if verdict is None:
                if self._entries_count >= FEATURE_VERDICTS:
                    self._entries.clear()
                    self._entries_count = 0
                    known = self._entries[machine.revision] = {}
                verdict = known[entry.kind] = _Judged.of(_judge_entry(entry, machine, self, levels))
                self._entries_count += 1
            judged.append(verdict)
        return judged

    def level_fit(self, required: Feature, machine: MachineProfile) -> Fit:
        """The fit of the cpu level an entry's variant requires, remembered per revision."""
        if not machine.revision:
            return self.fit(required, machine.by_key)
        key = (machine.revision, required)
        known = self._fits.get(key)
        if known is None:
            known = self._fits[key] = self.fit(required, machine.by_key)
        return known

    def fit(self, feature: Feature, machine: MachineFeatures) -> Fit:
        aliases = self.aliases.get(feature.key)
        if aliases:
            required = aliases.get(feature.value, feature.value)
            machine = {
                key: tuple(aliases.get(v, v) for v in values) if key == feature.key else values
                for key, values in machine.items()
            }
        else:
            required = feature.value
        return self.for_key(feature.key).fit(feature.key, required, machine)

    def levels(self, machine: MachineProfile) -> Levels:
        """The architectures whose variants this machine's `cpu` chooses between: only when
        `cpu` is judged by archspec lineage, and never in exact mode (the original rule).
        Remembered per machine type revision, which covers its cpus and mode."""
        if not machine.revision:
            return self._levels_of(machine)
        known = self._levels.get(machine.revision)
        if known is None:
            if len(self._levels) >= FEATURE_VERDICTS:
                self._levels.clear()
            known = self._levels[machine.revision] = self._levels_of(machine)
        return known

    def _levels_of(self, machine: MachineProfile) -> Levels:
        cpus = machine.by_key.get(CPU_KEY, ())
        matcher = self.for_key(CPU_KEY)
        if machine.mode == "exact" or not cpus or not isinstance(matcher, MicroarchMatcher):
            return Levels()
        aliases = self.aliases.get(CPU_KEY, {})
        return Levels.for_cpus(cpus, lambda cpu: matcher.canonical(aliases.get(cpu, cpu)))


@dataclass(slots=True)
class Verdict:
    """Why an entry was kept or dropped: the explanation behind every choice.

    Reasons and rules are tuples, added to by replacing them: a selection makes a verdict for
    every entry of the index and adds to a few, so entries of the same kind share the tuples of
    their remembered judgement instead of each copying them into lists of its own."""

    entry: Entry
    fits: bool
    satisfied: int = 0
    distance: float = 0.0
    reasons: tuple[str, ...] = ()
    chosen: bool = False
    # The rules that made it fit where the feature alone does not say (an x86-64 level).
    rules: tuple[str, ...] = ()
    # The platform it is served under when chosen, if not its own (a level as the baseline).
    served_platform: PlatformKey | None = None


class NoMatchingEntry(LookupError):
    def __init__(
        self, machine: MachineProfile, offered: list[str], verdicts: list[Verdict] | None = None
    ) -> None:
        self.machine = machine
        self.offered = offered
        self.verdicts = verdicts or []
        offered_text = "; ".join(offered) or "none"
        super().__init__(
            f"no entry of this index fits machine type {machine.name!r} "
            f"({machine.describe()}); entries offer: {offered_text}"
        )


@dataclass(slots=True)
class Selection:
    kept: list[Entry]
    verdicts: list[Verdict]


@dataclass(frozen=True, slots=True)
class _Judged:
    """A verdict's outcome without its entry, to be shared by entries of the same kind."""

    fits: bool
    satisfied: int
    distance: float
    reasons: tuple[str, ...]
    rules: tuple[str, ...]

    @classmethod
    def of(cls, verdict: Verdict) -> _Judged:
        return cls(
            verdict.fits, verdict.satisfied, verdict.distance, verdict.reasons, verdict.rules
        )


def judge(
    entry: Entry, machine: MachineProfile, matchers: Matchers, levels: Levels | None = None
) -> Verdict:
    """Does this entry fit the machine, how many features does it satisfy, and how closely;
    what `select` finds for each entry, the platform group aside.

    `levels` is `matchers.levels(machine)`, where the caller has it already.
    """
    levels = levels or matchers.levels(machine)
    (judged,) = matchers.judged((entry,), machine, levels)
    return _verdict(entry, judged)


def _verdict(entry: Entry, judged: _Judged) -> Verdict:
    return Verdict(
        entry, judged.fits, judged.satisfied, judged.distance, judged.reasons, rules=judged.rules
    )


def _judge_entry(
    entry: Entry, machine: MachineProfile, matchers: Matchers, levels: Levels | None
) -> Verdict:
    verdict = Verdict(entry, fits=True)
    platform = entry.platform
    if platform is not None and not entry.attestation and not machine.allows(platform):
        verdict.fits = False
        declared = ", ".join(str(p) for p in machine.platforms)
        verdict.reasons += (
            f"platform {platform} is not among the machine type's platforms ({declared})",
        )
    features = matchers.judge_features(entry.features, machine)
    verdict.satisfied = features.satisfied
    verdict.distance = features.distance
    if not features.fits:
        verdict.fits = False
        verdict.reasons += features.reasons
    if platform is not None and machine.mode != "exact":
        _judge_level(verdict, machine, matchers, levels or matchers.levels(machine))
    return verdict


def _judge_features(
    features: tuple[str, ...],
    machine: MachineProfile,
    fit_one: Callable[[Feature, MachineFeatures], Fit],
) -> FeatureVerdict:
    if machine.mode == "exact":
        return _judge_exact(features, machine)
    fits, satisfied, distance = True, 0, 0.0
    reasons: list[str] = []
    for text in features:
        try:
            feature = parse_feature(text)
        except InvalidFeature as exc:
            fits = False
            reasons.append(str(exc))
            continue
        fit = fit_one(feature, machine.by_key)
        if fit.ok:
            satisfied += 1
            distance += fit.distance
        else:
            fits = False
            reasons.append(fit.reason)
    return FeatureVerdict(fits, satisfied, distance, tuple(reasons))


def _judge_level(
    verdict: Verdict, machine: MachineProfile, matchers: Matchers, levels: Levels
) -> None:
    """An entry's variant as the cpu level it requires: it must fit; it counts as a satisfied
    feature only when the entry names no cpu of its own (that one says more).

    Checked outside `judge_features`, whose remembered verdicts are keyed by the entry's
    features alone: two entries with the same features and other variants differ here."""
    platform = verdict.entry.platform
    assert platform is not None
    required = levels.requirement(platform)
    if required is None:
        return
    fit = matchers.level_fit(required, machine)
    if not fit.ok:
        verdict.fits = False
        verdict.reasons += (f"variant {platform.variant} is the level {required}: {fit.reason}",)
        return
    cpus = ", ".join(f"{CPU_KEY}:{cpu}" for cpu in machine.by_key.get(CPU_KEY, ()))
    verdict.rules += (
        f"{platform.architecture} variant {platform.variant} read as {required}, which {cpus} runs",
    )
    if not any(text.startswith(f"{CPU_KEY}:") for text in verdict.entry.features):
        verdict.satisfied += 1
        verdict.distance += fit.distance


def _judge_exact(features: tuple[str, ...], machine: MachineProfile) -> FeatureVerdict:
    wanted = {str(f) for f in machine.features}
    offered = set(features)
    if offered == wanted:
        return FeatureVerdict(True, len(offered), 0.0, ())
    missing = sorted(wanted - offered)
    extra = sorted(offered - wanted)
    detail = "; ".join(
        part
        for part in (
            f"lacks {', '.join(missing)}" if missing else "",
            f"also requires {', '.join(extra)}" if extra else "",
        )
        if part
    )
    return FeatureVerdict(
        False, 0, 0.0, (f"exact mode: the entry's feature set differs ({detail})",)
    )


def select(
    index: Index,
    machine: MachineProfile,
    matchers: Matchers,
    *,
    unfit: Mapping[int, str] | None = None,
    choose: bool = True,
) -> Selection:
    """Keep one best-fitting entry per platform; raise NoMatchingEntry if none is left.

    `unfit` names entries (by position) already known not to fit, with the reason: nested
    indexes in which nothing fits. With `choose=False` (an index without features) every fitting
    entry is kept rather than one per platform.
    """
    levels = matchers.levels(machine)
    entries = index.entries
    judged = matchers.judged(entries, machine, levels)
    # `_verdict` written out: a call less per entry.
    verdicts = [
        Verdict(entry, j.fits, j.satisfied, j.distance, j.reasons, False, j.rules)
        for entry, j in zip(entries, judged, strict=True)
    ]
    for position, reason in (unfit or {}).items():
        verdicts[position].fits = False
        verdicts[position].reasons += (reason,)
    # The fitting entries of each platform group, in index order: only they compete.
    groups: dict[PlatformKey, list[Verdict]] = {}
    group_of: dict[PlatformKey, PlatformKey] = {}  # an index repeats a few platforms
    attestations: list[Verdict] = []
    for verdict in verdicts:
        platform = verdict.entry.platform
        if verdict.entry.attestation:
            attestations.append(verdict)
        elif platform is None or not choose:
            verdict.chosen = verdict.fits  # nothing to choose between
        elif verdict.fits:
            grouped = group_of.get(platform)
            if grouped is None:
                grouped = group_of[platform] = levels.group(platform)
            group = groups.get(grouped)
            if group is None:
                groups[grouped] = [verdict]
            else:
                group.append(verdict)

    for fitting in groups.values():
        best = _best(fitting)
        best.chosen = True
        best.served_platform = _served_platform(best, machine, levels)
        if len(fitting) > 1:
            better = f"entry {best.entry.position} fits this platform better"
            for verdict in fitting:
                if verdict is not best:
                    verdict.reasons += (better,)
    chosen_digests = {v.entry.digest for v in verdicts if v.chosen and v.entry.platform}
    if not chosen_digests and not any(v.chosen for v in verdicts):
        raise NoMatchingEntry(machine, _offered(index), verdicts)
    # An attestation describes one image; it is worth keeping only with that image.
    for verdict in attestations:
        verdict.chosen = verdict.entry.annotations.get(REFERENCE_DIGEST) in chosen_digests
        if not verdict.chosen:
            verdict.reasons += ("attestation of an entry that was not chosen",)
    return Selection([_served(v) for v in verdicts if v.chosen], verdicts)


def _best(fitting: list[Verdict]) -> Verdict:
    """The best fit: the most features satisfied, then the nearest, then the earliest.

    Compared field by field rather than with `max` and a key, which built a tuple per entry;
    `fitting` is in index order, so the first of equals stays."""
    best = fitting[0]
    for verdict in fitting:
        if verdict.satisfied > best.satisfied or (
            verdict.satisfied == best.satisfied and verdict.distance < best.distance
        ):
            best = verdict
    return best


def _served_platform(
    verdict: Verdict, machine: MachineProfile, levels: Levels
) -> PlatformKey | None:
    """The baseline platform for a chosen level, which every runtime's default platform takes
    (none takes a variant it does not expect; docs/selection.md), unless the machine type's
    declared platforms leave the baseline out: then its runtimes were told to take variants."""
    platform = verdict.entry.platform
    served = levels.served(platform) if platform is not None else None
    if served is None or not machine.allows(served):
        return None
    verdict.rules += (f"served as {served}, the platform runtimes take by default",)
    return served


def _served(verdict: Verdict) -> Entry:
    """The entry as the filtered index lists it: under the platform it is served as."""
    entry, served = verdict.entry, verdict.served_platform
    if served is None:
        return entry
    platform = dict(entry.descriptor.get("platform") or {})
    platform.pop("variant", None)
    if served.variant:
        platform["variant"] = served.variant
    descriptor = {**entry.descriptor, "platform": platform}
    return dataclasses.replace(entry, descriptor=descriptor, platform=served)


def chooses(index: Index, machine: MachineProfile, matchers: Matchers) -> bool:
    """Whether selection has anything to decide in this index for this machine: an entry with
    features, or a variant that is a level the machine's cpu decides (an index of x86-64 levels
    without any features)."""
    if index.has_features():
        return True
    levels = matchers.levels(machine)
    return any(
        entry.platform is not None and levels.requirement(entry.platform) is not None
        for entry in index.entries
    )


def entry_for_platform(entries: Iterable[Entry], platform: PlatformKey) -> Entry | None:
    """The entry a single-manifest client gets: same os/architecture, same variant if asked."""
    platform = normalize_platform(platform)
    candidates: list[tuple[bool, Entry]] = []
    for entry in entries:
        if entry.platform is None or entry.attestation:
            continue
        offered = normalize_platform(entry.platform)
        if (offered.os, offered.architecture) != (platform.os, platform.architecture):
            continue
        if platform.variant and offered.variant != platform.variant:
            continue
        candidates.append((bool(offered.variant), entry))
    # Prefer the entry without a variant: the one a runtime's default platform takes.
    candidates.sort(key=lambda candidate: candidate[0])
    return candidates[0][1] if candidates else None


def _offered(index: Index) -> list[str]:
    offered = []
    for entry in index.entries:
        if entry.platform is None or entry.attestation:
            continue
        features = ",".join(entry.features) or "generic"
        offered.append(f"{entry.platform}: {features}")
    return offered

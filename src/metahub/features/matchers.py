"""How one required feature is checked against what a machine has, and which matcher judges a key.

Each matcher answers with a `Fit`: whether the machine satisfies the requirement, how far the
requirement is from the best the machine could use (0 is an exact match; smaller is closer), and
why not when it does not fit (a matcher may also say which rule made it fit). Distances only
compare entries within one key. Each matcher also knows which values a machine may declare, so a
machine described on the fly (a profile login) is refused with a reason rather than matching
nothing.

The registry (`MatcherRegistry`) is the one place that turns the config's `features.matchers`
and `features.aliases` into matchers: adding a matcher is a class and its entry in
`BUILTIN_MATCHERS`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import archspec.cpu

MachineFeatures = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Fit:
    ok: bool
    distance: float = 0.0
    reason: str = ""


class Matcher(ABC):
    """Judges the features of one key, built with the aliases configured for that key."""

    name: ClassVar[str]
    default_aliases: ClassVar[Mapping[str, str]] = {}

    def __init__(self, aliases: Mapping[str, str] | None = None) -> None:
        self.aliases = {**self.default_aliases, **(aliases or {})}

    @classmethod
    def configured(cls, key: str, aliases: Mapping[str, Mapping[str, str]]) -> Matcher:
        """This matcher for `key`, given the aliases configured for every key."""
        return cls(aliases.get(key))

    def canonical(self, value: str) -> str:
        return self.aliases.get(value, value)

    def machine_key(self, key: str) -> str:
        """The key whose machine values a requirement of `key` is checked against."""
        return key

    @abstractmethod
    def fit(self, key: str, required: str, machine: MachineFeatures) -> Fit: ...

    @abstractmethod
    def check(self, value: str) -> str | None:
        """Why a machine cannot declare `value` (after aliases) for this key; None if it can."""


def _missing(key: str) -> Fit:
    return Fit(False, reason=f"the machine declares no {key} feature")


class ExactMatcher(Matcher):
    """A feature is satisfied only by the same value (the original MetaHub's rule)."""

    name = "exact"

    def check(self, value: str) -> str | None:
        return None  # any value is a value

    def fit(self, key: str, required: str, machine: MachineFeatures) -> Fit:
        have = machine.get(key, ())
        if required in have:
            return Fit(True)
        if not have:
            return _missing(key)
        return Fit(False, reason=f"{key}:{required} is not {_values(key, have)}")


# Names GCC builds as `skylake` that archspec does not know: client Skylake-derived cores.
DEFAULT_CPU_ALIASES: Mapping[str, str] = {
    "coffeelake": "skylake",
    "kabylake": "skylake",
    "cometlake": "skylake",
    "whiskeylake": "skylake",
    "amberlake": "skylake",
}


class MicroarchMatcher(Matcher):
    """archspec lineage: code built for a microarchitecture runs on its descendants."""

    name = "microarch"
    default_aliases = DEFAULT_CPU_ALIASES

    def check(self, value: str) -> str | None:
        if self.canonical(value) in archspec.cpu.TARGETS:
            return None
        return (
            f"{value!r} is not a microarchitecture archspec knows "
            "(e.g. haswell, zen3, sapphirerapids, neoverse_v1, x86_64_v3)"
        )

    def fit(self, key: str, required: str, machine: MachineFeatures) -> Fit:
        have = machine.get(key, ())
        if not have:
            return _missing(key)
        want = self.canonical(required)
        best: Fit | None = None
        for value in _most_derived(tuple(self.canonical(value) for value in have)):
            steps = _lineage_steps(value, want)
            if steps is not None and (best is None or steps < best.distance):
                best = Fit(True, float(steps))
        if best is not None:
            return best
        if want not in archspec.cpu.TARGETS:
            return Fit(
                False,
                reason=f"{key}:{required} is not a known microarchitecture "
                f"and is not {_values(key, have)}",
            )
        return Fit(
            False,
            reason=f"{key}:{required} does not run on {_values(key, have)} "
            "(not an ancestor in the archspec DAG)",
        )


@lru_cache(maxsize=1024)
def _most_derived(cpus: tuple[str, ...]) -> tuple[str, ...]:
    """The machine's cpus less those another of them builds on: a machine declaring
    `cpu:x86_64_v2` and `cpu:x86_64_v3` runs v3 code, so a v3 build is closer to it than a v2
    one. Whatever runs on a cpu left out runs on the one that builds on it, so what fits is
    unchanged; only the distance is measured from the most derived."""
    return tuple(
        cpu
        for cpu in cpus
        if not any(other != cpu and _lineage_steps(other, cpu) is not None for other in cpus)
    )


@lru_cache(maxsize=4096)
def _lineage_steps(machine: str, required: str) -> int | None:
    """How many generations `required` lies above the machine's microarchitecture, if at all.

    Generations are counted as the difference in ancestor counts, not as the shortest path: the
    generic levels are shortcuts in archspec's DAG (skylake_avx512 -> x86_64_v4 -> x86_64_v3),
    and a target built on another must always count as closer than the one it builds on.
    """
    if machine == required:
        return 0
    targets = archspec.cpu.TARGETS
    if machine not in targets or required not in targets:
        return None
    start = targets[machine]
    goal = targets[required]
    if not goal <= start:
        return None
    return len(start.ancestors) - len(goal.ancestors)


CPU_KEY = "cpu"
CPUFLAG_KEY = "cpuflag"
# archspec's flag names (sse4_1, avx512f, asimddp), in ASCII and of a bounded length.
_FLAG_RE = re.compile(r"^[a-z0-9_]{1,64}\Z")


class CpuFlagMatcher(Matcher):
    """Instruction-set flags, declared by the machine or implied by its `cpu` (archspec's lists).

    `cpuflag:avx512f` is satisfied by a machine that declares `cpuflag:avx512f`, or whose `cpu`
    microarchitecture has avx512f in archspec's feature list. Every flag that fits fits at
    distance 0: an entry requiring more flags the machine has satisfies more features, and
    selection already prefers that.
    """

    name = "cpuflag"

    def __init__(
        self, aliases: Mapping[str, str] | None = None, cpu_aliases: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(aliases)
        # The machine's cpu is read with the names the microarch matcher accepts (coffeelake).
        self._cpu = MicroarchMatcher(cpu_aliases)

    @classmethod
    def configured(cls, key: str, aliases: Mapping[str, Mapping[str, str]]) -> Matcher:
        return cls(aliases.get(key), aliases.get(CPU_KEY))

    def check(self, value: str) -> str | None:
        if _FLAG_RE.match(self.canonical(value)):
            return None  # archspec does not list every flag a machine may have
        return "a cpu flag is lowercase letters, digits and _, e.g. avx512f, sve, sse4_1"

    def fit(self, key: str, required: str, machine: MachineFeatures) -> Fit:
        if not _FLAG_RE.match(required):
            return Fit(False, reason=f"{key}:{required} is not a cpu flag like avx512f")
        if required in machine.get(key, ()):
            return Fit(True, reason=f"the machine declares {key}:{required}")
        cpus = machine.get(CPU_KEY, ())
        for cpu in cpus:
            if _has_flag(self._cpu.canonical(cpu), required):
                return Fit(True, reason=f"{CPU_KEY} {cpu} has {required}")
        if not cpus:
            return Fit(False, reason=f"{key}:{required}: the machine declares neither it nor a cpu")
        return Fit(
            False,
            reason=f"{key}:{required}: {' or '.join(f'{CPU_KEY} {c}' for c in cpus)} "
            f"lacks {required}, and the machine does not declare it",
        )


def _has_flag(cpu: str, flag: str) -> bool:
    target = archspec.cpu.TARGETS.get(cpu)
    return target is not None and flag in target.features


# ASCII digits, and few of them: `\d` admits any script's digits, and int() refuses (or float()
# overflows on) numbers thousands of digits long, which a feature string may hold.
_NUMBER = "[0-9]{1,18}"
_CAPABILITY_RE = re.compile(rf"^({_NUMBER})\.({_NUMBER})(a?)\Z")
PTX_KEY = "nvptx"
CAPABILITY_KEY = "nvcap"


def _capability(value: str) -> tuple[int, int, bool] | None:
    match = _CAPABILITY_RE.match(value)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), bool(match.group(3))


class CudaMatcher(Matcher):
    """CUDA compute capability.

    A cubin for X.y (`nvcap:X.y`) runs on X.z with z >= y, never across majors; an
    architecture-specific build (`nvcap:9.0a`, sm_90a) runs on exactly 9.0; PTX (`nvptx:X.Y`) is
    compiled just in time on any capability >= X.Y. PTX requirements are checked against the
    machine's `nvcap` values, and count as farther than any cubin that fits, since JIT costs
    start-up time and a cubin was tuned for the card.
    """

    name = "cuda"

    def machine_key(self, key: str) -> str:
        return CAPABILITY_KEY if key == PTX_KEY else key  # machines declare no PTX of their own

    def check(self, value: str) -> str | None:
        capability = _capability(self.canonical(value))
        if capability is None or capability[2]:  # `a` names a build, not a card
            return "a machine's compute capability is MAJOR.MINOR, e.g. 8.6"
        return None

    def fit(self, key: str, required: str, machine: MachineFeatures) -> Fit:
        ptx = key == PTX_KEY
        have_key = self.machine_key(key)
        have = machine.get(have_key, ())
        if not have:
            return _missing(have_key)
        want = _capability(required)
        if want is None or (ptx and want[2]):
            return Fit(False, reason=f"{key}:{required} is not a compute capability like 8.6")
        best: Fit | None = None
        for value in have:
            cap = _capability(value)
            if cap is None:
                continue
            distance = _capability_distance(cap, want, ptx)
            if distance is not None and (best is None or distance < best.distance):
                best = Fit(True, distance)
        if best is not None:
            return best
        if ptx:
            rule = f"{want[0]}.{want[1]} or any later capability"
        elif want[2]:
            rule = f"exactly {want[0]}.{want[1]}"
        else:
            rule = f"{want[0]}.{want[1]} or a later {want[0]}.x"
        return Fit(
            False, reason=f"{key}:{required} needs {rule}; machine has {_values(have_key, have)}"
        )


def _capability_distance(
    cap: tuple[int, int, bool], want: tuple[int, int, bool], ptx: bool
) -> float | None:
    if ptx:
        if (cap[0], cap[1]) < (want[0], want[1]):
            return None
        return 100.0 + (cap[0] - want[0]) * 10 + (cap[1] - want[1])
    if want[2]:
        return 0.0 if cap[:2] == want[:2] else None
    if cap[0] != want[0] or cap[1] < want[1]:
        return None
    return float(cap[1] - want[1])


# At most 32 numbers: a distance divides the last one by 1000**31, and 1000.0**103 overflows.
_VERSION_RE = re.compile(rf"^{_NUMBER}(?:\.{_NUMBER}){{0,31}}\Z")


def _version(value: str) -> tuple[int, ...] | None:
    return tuple(int(part) for part in value.split(".")) if _VERSION_RE.match(value) else None


class AtLeastMatcher(Matcher):
    """Dotted versions: `driver:535.54` is satisfied by a machine with driver 535.54 or later."""

    name = "at-least"

    def check(self, value: str) -> str | None:
        if _version(self.canonical(value)) is None:
            return "expected a dotted version, e.g. 535.104"
        return None

    def fit(self, key: str, required: str, machine: MachineFeatures) -> Fit:
        have = machine.get(key, ())
        if not have:
            return _missing(key)
        want = _version(required)
        if want is None:
            return Fit(False, reason=f"{key}:{required} is not a dotted version like 5.15.0")
        best: Fit | None = None
        for value in have:
            version = _version(value)
            if version is None or _padded(version, want)[0] < _padded(version, want)[1]:
                continue
            distance = _version_distance(*_padded(version, want))
            if best is None or distance < best.distance:
                best = Fit(True, distance)
        if best is not None:
            return best
        return Fit(
            False,
            reason=f"{key}:{required} needs at least {required}; machine has {_values(key, have)}",
        )


def _padded(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)), b + (0,) * (width - len(b))


def _version_distance(have: tuple[int, ...], want: tuple[int, ...]) -> float:
    """Majors apart, plus minors in thousandths: sums with other keys' distances on one scale.

    Orders versions the way they compare as long as later components stay below 1000.
    """
    return sum(
        (h - w) / 1000.0**position for position, (h, w) in enumerate(zip(have, want, strict=True))
    )


def _values(key: str, have: tuple[str, ...]) -> str:
    return ", ".join(f"{key}:{v}" for v in have)


BUILTIN_MATCHERS: Mapping[str, type[Matcher]] = {
    matcher.name: matcher
    for matcher in (ExactMatcher, MicroarchMatcher, CpuFlagMatcher, CudaMatcher, AtLeastMatcher)
}

DEFAULT_KEY_MATCHERS: Mapping[str, str] = {
    CPU_KEY: "microarch",
    CPUFLAG_KEY: "cpuflag",
    "nvcap": "cuda",
    "nvptx": "cuda",
    # What `metahub detect` reports from NVML: an entry needs at least this driver / CUDA.
    "driver": "at-least",
    "cuda": "at-least",
}


class UnknownMatcher(ValueError):
    """A `features.matchers` entry that names no matcher."""


class MatcherRegistry:
    """Which matcher judges each feature key, built from the config's `features` section.

    The built-in keys first (`DEFAULT_KEY_MATCHERS`), then `features.matchers` (key -> matcher
    name); each matcher gets `features.aliases` for its key (and for any other key it reads). A
    key without a matcher is judged exactly.
    """

    def __init__(
        self,
        key_matchers: Mapping[str, str] | None = None,
        aliases: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.aliases = {key: dict(values) for key, values in (aliases or {}).items()}
        self._default: Matcher = ExactMatcher()
        self._by_key: dict[str, Matcher] = {}
        for key, name in {**DEFAULT_KEY_MATCHERS, **(key_matchers or {})}.items():
            matcher = BUILTIN_MATCHERS.get(name)
            if matcher is None:
                known = ", ".join(sorted(BUILTIN_MATCHERS))
                raise UnknownMatcher(
                    f"unknown matcher {name!r} for key {key!r}: use one of {known}"
                )
            self._by_key[key] = matcher.configured(key, self.aliases)

    def for_key(self, key: str) -> Matcher:
        return self._by_key.get(key, self._default)

    def machine_keys(self) -> set[str]:
        """The keys with a matcher that a machine declares (not `nvptx`: it describes builds)."""
        return {matcher.machine_key(key) for key, matcher in self._by_key.items()}

    def check(self, key: str, value: str) -> str | None:
        """Why a machine cannot declare `key:value`; None if it can."""
        return self.for_key(key).check(value)

"""Architecture variants read as CPU requirements: x86-64 levels and Arm architecture versions.

Images ship builds for x86-64 microarchitecture levels as `linux/amd64/v2`, `/v3`, `/v4` entries
(and Arm ones as `linux/arm64/v8.2`, `/v9`) without features. A runtime's default platform on
amd64 names no variant, so docker, containerd and podman all run the baseline build whatever
the CPU. MetaHub knows the machine's CPU, so for a machine type that declares a `cpu` of the
architecture's family, the variants of one architecture are one choice: `amd64/vN` requires
`cpu:x86_64_vN` (archspec: zen3 descends from x86_64_v3, nehalem from x86_64_v2, core2 from
neither), `arm64/v8.N` requires `cpu:armv8.Na` and `arm64/v9[.N]` requires `cpu:armv9.Na`, and
the baseline (`amd64` or `amd64/v1`, `arm64` or `arm64/v8`) requires nothing. The entry chosen
is served under the baseline platform, the one every runtime's default takes (docs/selection.md
says what each runtime does with a variant it does not expect).

A variant archspec has no level for (`amd64/v7`, `arm64/v8.7`) stays a platform of its own, as
does every variant for a machine without such a `cpu`: the runtime chooses, as before.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import archspec.cpu

from metahub.features.model import Feature
from metahub.oci.platform import PlatformKey, normalize_platform

CPU_KEY = "cpu"


@dataclass(frozen=True, slots=True)
class Lineage:
    """One architecture whose variants are archspec levels."""

    architecture: str  # as in an index: amd64
    family: str  # archspec's family of the targets: x86_64
    baseline: frozenset[str]  # the variants that require nothing
    served_variant: str  # the variant the chosen entry is served under
    pattern: re.Pattern[str]
    target: Callable[[re.Match[str]], str]


def _arm_target(match: re.Match[str]) -> str:
    return f"armv{match.group(1)}.{match.group(2) or '0'}a"


LINEAGES: dict[str, Lineage] = {
    lineage.architecture: lineage
    for lineage in (
        Lineage(
            "amd64",
            "x86_64",
            frozenset({"", "v1"}),
            "",
            re.compile(r"^v([0-9])\Z"),
            lambda match: f"x86_64_v{match.group(1)}",
        ),
        Lineage(
            "arm64",
            "aarch64",
            frozenset({"", "v8", "v8.0"}),
            "v8",
            re.compile(r"^v([89])(?:\.([0-9]))?\Z"),
            _arm_target,
        ),
    )
}


def level_target(architecture: str, variant: str) -> str | None:
    """The archspec target an architecture's variant stands for; None for the baseline or a
    variant archspec has no level for."""
    lineage = LINEAGES.get(architecture)
    if lineage is None or variant in lineage.baseline:
        return None
    match = lineage.pattern.match(variant)
    if match is None:
        return None
    target = lineage.target(match)
    return target if target in archspec.cpu.TARGETS else None


@dataclass(frozen=True, slots=True)
class Levels:
    """For one machine: the architectures whose variants its `cpu` decides between."""

    architectures: frozenset[str] = frozenset()

    @classmethod
    def for_cpus(cls, cpus: Iterable[str], canonical: Callable[[str], str]) -> Levels:
        """The lineages of the machine's cpus (after aliases): a zen3 decides amd64's levels."""
        families = set()
        for cpu in cpus:
            target = archspec.cpu.TARGETS.get(canonical(cpu))
            if target is not None:
                families.add(target.family.name)
        return cls(frozenset(a for a, lineage in LINEAGES.items() if lineage.family in families))

    def _lineage(self, platform: PlatformKey) -> Lineage | None:
        if platform.architecture not in self.architectures:
            return None
        lineage = LINEAGES[platform.architecture]
        if platform.variant in lineage.baseline or level_target(
            platform.architecture, platform.variant
        ):
            return lineage
        return None

    def group(self, platform: PlatformKey) -> PlatformKey:
        """The platform an entry competes in: the baseline for every level of its lineage."""
        lineage = self._lineage(platform)
        if lineage is None:
            return normalize_platform(platform)
        return normalize_platform(
            PlatformKey(platform.os, platform.architecture, "", platform.os_version)
        )

    def requirement(self, platform: PlatformKey) -> Feature | None:
        """The `cpu` an entry's variant requires, when this machine's cpu decides its level."""
        if self._lineage(platform) is None:
            return None
        target = level_target(platform.architecture, platform.variant)
        return Feature(CPU_KEY, target) if target is not None else None

    def served(self, platform: PlatformKey) -> PlatformKey | None:
        """The platform a chosen entry is served under, when it is not its own."""
        lineage = self._lineage(platform)
        if lineage is None:
            return None
        served = PlatformKey(
            platform.os, platform.architecture, lineage.served_variant, platform.os_version
        )
        return None if normalize_platform(served) == normalize_platform(platform) else served

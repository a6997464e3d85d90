"""What the feature picker suggests: features in use, archspec's CPUs, common CUDA capabilities."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import archspec.cpu

from metahub.features.matchers import DEFAULT_CPU_ALIASES
from metahub.management.records import MachineType

CUDA_CAPABILITIES = (
    "5.0", "5.2", "6.0", "6.1", "7.0", "7.2", "7.5", "8.0", "8.6", "8.7", "8.9",
    "9.0", "9.0a", "10.0", "10.0a", "12.0", "12.0a",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Suggestion:
    value: str
    label: str


def feature_suggestions(
    machine_types: Iterable[MachineType], aliases: Mapping[str, Mapping[str, str]]
) -> list[Suggestion]:
    """Features already in use first (most used first), then every CPU and capability known."""
    used = Counter(feature for machine in machine_types for feature in machine.features)
    suggestions = [
        Suggestion(feature, f"in use by {count} machine type{'s' if count != 1 else ''}")
        for feature, count in sorted(used.items(), key=lambda item: (-item[1], item[0]))
    ]
    seen = set(used)

    def add(value: str, label: str) -> None:
        if value not in seen:
            seen.add(value)
            suggestions.append(Suggestion(value, label))

    for name, target in sorted(archspec.cpu.TARGETS.items()):
        add(f"cpu:{name}", f"{target.family} microarchitecture ({target.vendor})")
    cpu_aliases = {**DEFAULT_CPU_ALIASES, **aliases.get("cpu", {})}
    for name, target_name in sorted(cpu_aliases.items()):
        add(f"cpu:{name}", f"built as cpu:{target_name}")
    for key, mapping in sorted(aliases.items()):
        if key != "cpu":
            for name, target_name in sorted(mapping.items()):
                add(f"{key}:{name}", f"alias of {key}:{target_name}")
    for capability in CUDA_CAPABILITIES:
        add(f"nvcap:{capability}", "CUDA compute capability (cubin)")
    for capability in CUDA_CAPABILITIES:
        if not capability.endswith("a"):
            add(f"nvptx:{capability}", "CUDA PTX, compiled on load")
    return suggestions

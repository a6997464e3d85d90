"""Architecture variants as CPU levels: `amd64/vN` requires `cpu:x86_64_vN`, arm64's versions
their armv8.Na / armv9.Na, for a machine whose cpu is of that architecture's family.

Expected choices are written by hand; the lineage each rests on is checked first against
archspec's own ancestors (`test_premises`), never against the code under test.
"""

from __future__ import annotations

from typing import Any

import archspec.cpu
import orjson
import pytest

from metahub.features.levels import Levels, level_target
from metahub.features.selection import (
    MachineProfile,
    Matchers,
    NoMatchingEntry,
    Selection,
    select,
)
from metahub.oci.platform import PlatformKey
from tests.support.oci import AMD64, AMD64_V2, AMD64_V3, ARM64, ARM64_V8, entry, make_index, sha

TARGETS = archspec.cpu.TARGETS
AMD64_V1 = {**AMD64, "variant": "v1"}
AMD64_V4 = {**AMD64, "variant": "v4"}
AMD64_V7 = {**AMD64, "variant": "v7"}
ARM64_V82 = {**ARM64, "variant": "v8.2"}
ARM64_V9 = {**ARM64, "variant": "v9"}

LABELS: dict[str, str] = {}


def labelled(label: str, platform: dict[str, Any], *features: str) -> dict[str, Any]:
    LABELS[sha(label)] = label
    return entry(label, platform, *features)


# The ecosystem's shape: levels without features. The baseline is not first, so a runtime
# taking the first amd64 entry and one taking the entry without a variant differ.
LEVEL_INDEX = [
    labelled("v2", AMD64_V2),
    labelled("v3", AMD64_V3),
    labelled("base", AMD64),
    labelled("v4", AMD64_V4),
    labelled("arm-base", ARM64_V8),
    labelled("arm-v8.2", ARM64_V82),
    labelled("arm-v9", ARM64_V9),
]


def selection(descriptors: list[dict[str, Any]], features: list[str], **profile: Any) -> Selection:
    return select(make_index(*descriptors), MachineProfile.of("m", features, **profile), Matchers())


def chosen(descriptors: list[dict[str, Any]], features: list[str], **profile: Any) -> list[str]:
    return [LABELS[e.digest] for e in selection(descriptors, features, **profile).kept]


def test_premises() -> None:
    """The lineage the expectations below rest on, as archspec has it."""
    ancestors = {name: {a.name for a in TARGETS[name].ancestors} for name in TARGETS}
    assert {"x86_64_v3", "x86_64_v2"} <= ancestors["zen3"]
    assert "x86_64_v4" not in ancestors["zen3"]
    assert "x86_64_v2" in ancestors["nehalem"]
    assert "x86_64_v3" not in ancestors["nehalem"]
    assert not {"x86_64_v2", "x86_64_v3"} & ancestors["core2"]
    assert {"x86_64_v4", "x86_64_v3"} <= ancestors["sapphirerapids"]
    assert "armv8.2a" in ancestors["neoverse_n1"]
    assert "armv9.0a" not in ancestors["neoverse_n1"]
    assert "armv8.1a" in ancestors["a64fx"] and "armv8.2a" in ancestors["a64fx"]


@pytest.mark.parametrize(
    ("architecture", "variant", "target"),
    [
        ("amd64", "", None),
        ("amd64", "v1", None),
        ("amd64", "v2", "x86_64_v2"),
        ("amd64", "v3", "x86_64_v3"),
        ("amd64", "v4", "x86_64_v4"),
        ("amd64", "v5", None),  # no such level in archspec
        ("amd64", "v33", None),
        ("amd64", "3", None),
        ("arm64", "", None),
        ("arm64", "v8", None),
        ("arm64", "v8.2", "armv8.2a"),
        ("arm64", "v8.6", "armv8.6a"),
        ("arm64", "v8.7", None),
        ("arm64", "v9", "armv9.0a"),
        ("arm64", "v9.0", "armv9.0a"),
        ("arm64", "v9.2", "armv9.2a"),
        ("arm", "v7", None),
        ("riscv64", "v3", None),
    ],
)
def test_level_targets(architecture: str, variant: str, target: str | None) -> None:
    assert level_target(architecture, variant) == target


@pytest.mark.parametrize(
    ("cpu", "expected"),
    [
        ("zen3", ["v3", "arm-base", "arm-v8.2", "arm-v9"]),
        ("nehalem", ["v2", "arm-base", "arm-v8.2", "arm-v9"]),
        ("core2", ["base", "arm-base", "arm-v8.2", "arm-v9"]),
        ("sapphirerapids", ["v4", "arm-base", "arm-v8.2", "arm-v9"]),
        (
            "coffeelake",
            ["v3", "arm-base", "arm-v8.2", "arm-v9"],
        ),  # an alias of skylake: AVX2, no AVX-512
        ("neoverse_n1", ["v2", "v3", "base", "v4", "arm-v8.2"]),
        ("a64fx", ["v2", "v3", "base", "v4", "arm-v8.2"]),
        ("neoverse_v2", ["v2", "v3", "base", "v4", "arm-v9"]),
    ],
)
def test_the_cpu_chooses_the_level(cpu: str, expected: list[str]) -> None:
    # The other architecture's variants stay platforms of their own: the runtime chooses there.
    assert chosen(LEVEL_INDEX, [f"cpu:{cpu}"]) == expected


def test_a_machine_without_a_cpu_keeps_every_variant() -> None:
    assert chosen(LEVEL_INDEX, []) == [LABELS[e["digest"]] for e in LEVEL_INDEX]
    assert chosen(LEVEL_INDEX, ["nvcap:8.6"]) == [LABELS[e["digest"]] for e in LEVEL_INDEX]


def test_an_unknown_cpu_keeps_every_variant() -> None:
    # A value archspec does not know names no family: nothing to decide with.
    assert chosen(LEVEL_INDEX[:3], ["cpu:mycpu"]) == ["v2", "v3", "base"]


def test_exact_mode_keeps_the_original_rule() -> None:
    descriptors = [labelled("v3", AMD64_V3), labelled("zen3", AMD64, "cpu:zen3")]
    assert chosen(descriptors, ["cpu:zen3"], mode="exact") == ["zen3"]
    with pytest.raises(NoMatchingEntry):  # no entry's feature set equals {cpu:zen3}
        chosen(LEVEL_INDEX[:3], ["cpu:zen3"], mode="exact")


def test_cpu_matched_exactly_keeps_every_variant() -> None:
    # An operator who assigns `cpu` the exact matcher opted out of archspec's lineage.
    matchers = Matchers({"cpu": "exact"})
    index = make_index(*LEVEL_INDEX[:3])
    kept = select(index, MachineProfile.of("m", ["cpu:zen3"]), matchers).kept
    assert [LABELS[e.digest] for e in kept] == ["v2", "v3", "base"]


def test_levels_compete_with_features() -> None:
    descriptors = [
        labelled("v3", AMD64_V3),
        labelled("haswell", AMD64, "cpu:haswell"),
        labelled("zen2", AMD64, "cpu:zen2"),
        labelled("base", AMD64),
    ]
    # zen3: zen2 is one generation away, x86_64_v3 three.
    assert chosen(descriptors, ["cpu:zen3"]) == ["zen2"]
    # skylake: haswell is closer than the level; zen2 does not run.
    assert chosen(descriptors, ["cpu:skylake"]) == ["haswell"]
    # nehalem: nothing but the baseline.
    assert chosen(descriptors, ["cpu:nehalem"]) == ["base"]


def test_a_level_with_a_cpu_of_its_own_counts_once() -> None:
    descriptors = [
        labelled("v3-haswell", AMD64_V3, "cpu:haswell"),
        labelled("skylake", AMD64, "cpu:skylake"),
    ]
    # Both satisfy one feature; skylake is nearer a skylake machine.
    assert chosen(descriptors, ["cpu:skylake"]) == ["skylake"]
    # The level must still fit: a v4 build is no haswell build, whatever it claims.
    descriptors = [labelled("v4-haswell", AMD64_V4, "cpu:haswell"), labelled("base", AMD64)]
    assert chosen(descriptors, ["cpu:haswell"]) == ["base"]


def test_levels_combine_with_other_keys() -> None:
    descriptors = [
        labelled("v3", AMD64_V3),
        labelled("v2-gpu", AMD64_V2, "nvcap:8.0"),
        labelled("base", AMD64),
    ]
    assert chosen(descriptors, ["cpu:zen3", "nvcap:8.6"]) == ["v2-gpu"]  # two satisfied
    assert chosen(descriptors, ["cpu:zen3"]) == ["v3"]


def test_unknown_variants_stay_their_own_platform() -> None:
    descriptors = [labelled("v7", AMD64_V7), labelled("v3", AMD64_V3), labelled("base", AMD64)]
    assert chosen(descriptors, ["cpu:zen3"]) == ["v7", "v3"]


def test_the_chosen_level_is_served_as_the_baseline_platform() -> None:
    result = selection(LEVEL_INDEX, ["cpu:zen3"])
    served = {LABELS[e.digest]: e for e in result.kept}
    assert served["v3"].platform == PlatformKey("linux", "amd64")
    assert served["v3"].descriptor["platform"] == {"os": "linux", "architecture": "amd64"}
    # Only the platform changes: the digest and everything else stay the upstream's.
    original = next(e for e in LEVEL_INDEX if e["digest"] == sha("v3"))
    assert {k: v for k, v in served["v3"].descriptor.items() if k != "platform"} == {
        k: v for k, v in original.items() if k != "platform"
    }
    verdict = next(v for v in result.verdicts if v.chosen and v.entry.digest == sha("v3"))
    assert verdict.served_platform == PlatformKey("linux", "amd64")
    assert verdict.entry.platform == PlatformKey("linux", "amd64", "v3")
    assert verdict.rules == (
        "amd64 variant v3 read as cpu:x86_64_v3, which cpu:zen3 runs",
        "served as linux/amd64, the platform runtimes take by default",
    )
    rendered = orjson.loads(make_index(*LEVEL_INDEX).with_entries(result.kept))
    assert [m["platform"] for m in rendered["manifests"]] == [
        {"os": "linux", "architecture": "amd64"},
        ARM64_V8,
        ARM64_V82,
        ARM64_V9,
    ]


def test_arm64_levels_are_served_as_v8() -> None:
    result = selection(LEVEL_INDEX, ["cpu:neoverse_v2"])
    served = {LABELS[e.digest]: e for e in result.kept}
    assert served["arm-v9"].descriptor["platform"] == {
        "os": "linux",
        "architecture": "arm64",
        "variant": "v8",
    }


def test_the_baseline_chosen_is_served_unchanged() -> None:
    result = selection(LEVEL_INDEX, ["cpu:core2"])
    assert [e.descriptor for e in result.kept] == [LEVEL_INDEX[2], *LEVEL_INDEX[4:]]
    base = next(v for v in result.verdicts if v.chosen and v.entry.digest == sha("base"))
    assert base.served_platform is None and base.rules == ()


def test_v1_is_the_baseline_served_without_a_variant() -> None:
    descriptors = [labelled("v1", AMD64_V1), labelled("v3", AMD64_V3)]
    result = selection(descriptors, ["cpu:core2"])
    assert [LABELS[e.digest] for e in result.kept] == ["v1"]
    assert result.kept[0].descriptor["platform"] == {"os": "linux", "architecture": "amd64"}


def test_declared_variant_platforms_keep_their_variant() -> None:
    # A machine type that declares only linux/amd64/v3 runs a runtime told to take that variant.
    result = selection(LEVEL_INDEX, ["cpu:zen3"], platforms=["linux/amd64/v3"])
    assert [LABELS[e.digest] for e in result.kept] == ["v3"]
    assert result.kept[0].descriptor["platform"]["variant"] == "v3"
    # With the baseline declared too, the baseline platform is what it is served as.
    result = selection(LEVEL_INDEX, ["cpu:zen3"], platforms=["linux/amd64", "linux/amd64/v3"])
    assert [LABELS[e.digest] for e in result.kept] == ["v3"]
    assert "variant" not in result.kept[0].descriptor["platform"]


def test_a_level_that_does_not_run_says_why() -> None:
    result = selection(LEVEL_INDEX[:3], ["cpu:nehalem"])
    verdict = next(v for v in result.verdicts if v.entry.digest == sha("v3"))
    assert not verdict.fits
    assert verdict.reasons == (
        "variant v3 is the level cpu:x86_64_v3: cpu:x86_64_v3 does not run on cpu:nehalem "
        "(not an ancestor in the archspec DAG)",
    )


def test_configured_cpu_aliases_decide_levels() -> None:
    matchers = Matchers(aliases={"cpu": {"lab-epyc": "zen3"}})
    index = make_index(*LEVEL_INDEX[:3])
    kept = select(index, MachineProfile.of("m", ["cpu:lab-epyc"]), matchers).kept
    assert [LABELS[e.digest] for e in kept] == ["v3"]


def test_levels_of_a_machine() -> None:
    assert Levels.for_cpus(["zen3"], str).architectures == {"amd64"}
    assert Levels.for_cpus(["zen3", "neoverse_n1"], str).architectures == {"amd64", "arm64"}
    assert Levels.for_cpus(["mycpu"], str).architectures == frozenset()
    levels = Levels.for_cpus(["zen3"], str)
    assert levels.group(PlatformKey("linux", "amd64", "v3")) == PlatformKey("linux", "amd64")
    assert levels.group(PlatformKey("linux", "amd64", "v7")) == PlatformKey("linux", "amd64", "v7")
    assert levels.group(PlatformKey("linux", "arm64", "v9")) == PlatformKey("linux", "arm64", "v9")


@pytest.mark.parametrize(
    "cpus", [["cpu:x86_64_v2", "cpu:x86_64_v3"], ["cpu:x86_64_v3", "cpu:x86_64_v2"]]
)
def test_a_machine_declaring_two_levels_gets_the_higher_wherever_it_stands(cpus: list[str]) -> None:
    """Found by the ranking property: with v2 and v3 declared, both builds ran at distance 0
    and the earlier in the index won; the machine runs v3 code, so v3 is the closer build."""
    for descriptors in ([LEVEL_INDEX[0], LEVEL_INDEX[1]], [LEVEL_INDEX[1], LEVEL_INDEX[0]]):
        assert chosen(descriptors, cpus) == ["v3"]

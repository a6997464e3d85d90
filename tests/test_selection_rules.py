"""The selection rules, table by table: archspec families, CUDA, at-least, aliases, modes.

Every expected choice is written out by hand and, where it rests on the archspec DAG, checked
first against `archspec.cpu.TARGETS[...].ancestors` (the oracle), never against the code under
test. Ranking cases only use entries whose microarchitectures form a chain in that DAG, so "most
derived" has one answer.
"""

from __future__ import annotations

from typing import Any

import archspec.cpu
import pytest

from metahub.features.selection import (
    MachineProfile,
    Matchers,
    NoMatchingEntry,
    Selection,
    judge,
    select,
)
from tests.support.oci import (
    AMD64,
    AMD64_V2,
    AMD64_V3,
    ARM64,
    ARM64_V8,
    ARM_V7,
    attestation,
    entry,
    make_index,
    sha,
)

TARGETS = archspec.cpu.TARGETS
GENERIC = "generic"


# --- building indexes --------------------------------------------------------------------------


_BY_DIGEST: dict[str, str] = {}


def labelled(label: str, platform: dict[str, str] | None, *features: str) -> dict[str, Any]:
    _BY_DIGEST[sha(label)] = label
    return entry(label, platform, *features)


def labelled_attestation(label: str, of: str) -> dict[str, Any]:
    _BY_DIGEST[sha(label)] = label
    return attestation(label, of)


def kept_labels(selection: Selection) -> list[str]:
    """Labels of the kept entries, in index order (a label is its digest's preimage)."""
    return [_BY_DIGEST.get(e.digest, e.digest) for e in selection.kept]


def choose(
    descriptors: list[dict[str, Any]],
    machine_features: list[str],
    matchers: Matchers | None = None,
    **profile: Any,
) -> list[str]:
    index = make_index(*descriptors)
    machine = MachineProfile.of("m", machine_features, **profile)
    return kept_labels(select(index, machine, matchers or Matchers()))


# --- the oracle --------------------------------------------------------------------------------


def runs_on(required: str, machine: str) -> bool:
    """archspec: code for `required` runs on `machine` when it is the machine or an ancestor."""
    if required == machine:
        return True
    return required in {t.name for t in TARGETS[machine].ancestors}


def oracle_cpu_choice(machine: str, offered: list[str]) -> str:
    """The fitting target every other fitting one is an ancestor of; GENERIC if none fits."""
    fitting = [name for name in offered if runs_on(name, machine)]
    if not fitting:
        return GENERIC
    tops = [a for a in fitting if all(a == b or runs_on(b, a) for b in fitting)]
    assert len(tops) == 1, f"table error: {fitting} is not a chain in archspec's DAG"
    return tops[0]


def cpu_case(
    platform: dict[str, str], machine: str, offered: list[str], expected: str
) -> tuple[dict[str, str], str, list[str], str]:
    return platform, machine, offered, expected


CPU_CASES = [
    # Intel
    cpu_case(
        AMD64,
        "sapphirerapids",
        ["haswell", "skylake_avx512", "icelake", "cascadelake"],
        "icelake",
    ),
    cpu_case(AMD64, "sapphirerapids", ["sapphirerapids", "icelake", "haswell"], "sapphirerapids"),
    cpu_case(
        AMD64, "cascadelake", ["icelake", "sapphirerapids", "skylake_avx512"], "skylake_avx512"
    ),
    cpu_case(AMD64, "icelake", ["sapphirerapids", "cascadelake", "broadwell"], "cascadelake"),
    cpu_case(AMD64, "skylake", ["skylake_avx512", "cascadelake", "broadwell"], "broadwell"),
    cpu_case(AMD64, "haswell", ["broadwell", "skylake", "x86_64_v4"], GENERIC),
    cpu_case(AMD64, "icelake", ["x86_64_v2", "x86_64_v4", "x86_64_v3"], "x86_64_v4"),
    cpu_case(AMD64, "broadwell", ["x86_64_v4", "x86_64_v3", "x86_64_v2"], "x86_64_v3"),
    cpu_case(AMD64, "ivybridge", ["x86_64_v3", "x86_64_v2"], "x86_64_v2"),
    cpu_case(AMD64, "nehalem", ["x86_64_v3", "sandybridge"], GENERIC),
    cpu_case(AMD64, "sandybridge", ["nehalem", "westmere", "core2"], "westmere"),
    cpu_case(AMD64, "skylake", ["x86_64", "haswell", "x86_64_v2"], "haswell"),
    # AMD
    cpu_case(AMD64, "zen2", ["haswell"], GENERIC),
    cpu_case(AMD64, "zen2", ["haswell", "x86_64_v3"], "x86_64_v3"),
    cpu_case(AMD64, "zen2", ["skylake", "broadwell", "zen3"], GENERIC),
    cpu_case(AMD64, "zen3", ["zen", "zen4", "zen2"], "zen2"),
    cpu_case(AMD64, "zen3", ["x86_64_v3", "zen3", "zen"], "zen3"),
    cpu_case(AMD64, "zen", ["zen2", "zen3", "x86_64_v4"], GENERIC),
    cpu_case(AMD64, "zen4", ["x86_64_v3", "x86_64_v4"], "x86_64_v4"),
    cpu_case(AMD64, "zen4", ["skylake_avx512", "zen3", "zen2"], "zen3"),
    cpu_case(AMD64, "zen4", ["zen", "zen4", "zen5"], "zen4"),
    cpu_case(AMD64, "zen5", ["zen2", "zen4", "icelake"], "zen4"),
    # ARM
    cpu_case(ARM64, "neoverse_v1", ["aarch64", "neoverse_n1", "armv8.2a"], "neoverse_n1"),
    cpu_case(ARM64, "neoverse_v1", ["armv8.1a", "armv8.4a", "armv8.2a"], "armv8.4a"),
    cpu_case(ARM64, "neoverse_v1", ["neoverse_n1", "neoverse_v1"], "neoverse_v1"),
    cpu_case(ARM64, "neoverse_v1", ["neoverse_v2", "armv9.0a", "haswell"], GENERIC),
    cpu_case(ARM64, "neoverse_n1", ["neoverse_v1", "armv8.4a"], GENERIC),
    cpu_case(ARM64, "neoverse_n1", ["neoverse_v1", "armv8.2a", "aarch64"], "armv8.2a"),
    cpu_case(ARM64, "neoverse_v2", ["armv9.0a", "neoverse_v1", "armv8.5a"], "armv9.0a"),
    cpu_case(ARM64, "a64fx", ["armv8.2a", "armv8.4a", "neoverse_n1"], "armv8.2a"),
    cpu_case(ARM64, "a64fx", ["a64fx", "armv8.1a"], "a64fx"),
    cpu_case(ARM64, "m1", ["armv8.4a", "neoverse_n1", "armv8.3a"], "armv8.4a"),
    cpu_case(ARM64, "armv8.1a", ["armv8.2a", "a64fx"], GENERIC),
]


@pytest.mark.parametrize(
    ("platform", "machine", "offered", "expected"),
    CPU_CASES,
    ids=[f"{c[1]}-{'+'.join(c[2])}" for c in CPU_CASES],
)
def test_microarch_family_choice(
    platform: dict[str, str], machine: str, offered: list[str], expected: str
) -> None:
    assert oracle_cpu_choice(machine, offered) == expected  # the table agrees with archspec
    descriptors = [labelled(name, platform, f"cpu:{name}") for name in offered]
    descriptors.append(labelled(GENERIC, platform))
    assert choose(descriptors, [f"cpu:{machine}"]) == [expected]


@pytest.mark.parametrize(("platform", "machine", "offered", "expected"), CPU_CASES)
def test_microarch_family_choice_is_order_independent(
    platform: dict[str, str], machine: str, offered: list[str], expected: str
) -> None:
    """The most derived target wins wherever it sits in the index."""
    descriptors = [labelled(name, platform, f"cpu:{name}") for name in reversed(offered)]
    descriptors.insert(0, labelled(GENERIC, platform))
    assert choose(descriptors, [f"cpu:{machine}"]) == [expected]


@pytest.mark.parametrize(
    ("machine", "required"),
    [
        ("sapphirerapids", name)
        for name in ("haswell", "skylake_avx512", "icelake", "cascadelake", "x86_64_v4")
    ]
    + [("zen2", "haswell"), ("zen2", "x86_64_v3"), ("zen4", "x86_64_v4"), ("zen4", "icelake")]
    + [("neoverse_v1", name) for name in ("neoverse_n1", "a64fx", "armv8.4a", "armv8.5a", "m1")]
    + [("a64fx", name) for name in ("armv8.2a", "armv8.3a", "neoverse_n1")],
)
def test_fit_verdict_follows_archspec(machine: str, required: str) -> None:
    index = make_index(entry("e", AMD64, f"cpu:{required}"))
    verdict = judge(index.entries[0], MachineProfile.of("m", [f"cpu:{machine}"]), Matchers())
    assert verdict.fits is runs_on(required, machine)
    if not verdict.fits:
        text = " ".join(verdict.reasons)
        assert f"cpu:{required}" in text
        assert f"cpu:{machine}" in text


def test_zen2_premises() -> None:
    """The issue's own example, checked against archspec first."""
    assert not runs_on("haswell", "zen2")
    assert runs_on("x86_64_v3", "zen2")


# --- nvcap, nvptx ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("machine", "offered", "expected"),
    [
        # a cubin X.y runs on X.z, z >= y; the nearest one wins
        (["nvcap:8.9"], ["nvcap:8.0", "nvcap:8.6"], "nvcap:8.6"),
        (["nvcap:8.6"], ["nvcap:8.6", "nvcap:8.0"], "nvcap:8.6"),
        (["nvcap:8.6"], ["nvcap:8.9", "nvcap:9.0"], GENERIC),
        (["nvcap:9.0"], ["nvcap:8.0", "nvcap:8.6"], GENERIC),
        # architecture-specific builds: exactly that capability
        (["nvcap:9.0"], ["nvcap:9.0a", "nvcap:8.0"], "nvcap:9.0a"),
        (["nvcap:9.1"], ["nvcap:9.0a"], GENERIC),
        (["nvcap:10.0"], ["nvcap:9.0a", "nvcap:9.0"], GENERIC),
        (["nvcap:8.6"], ["nvcap:8.6a"], "nvcap:8.6a"),
        (["nvcap:8.9"], ["nvcap:8.6a", "nvcap:8.0"], "nvcap:8.0"),
        # PTX: any capability >= X.Y, across majors, but behind every cubin that fits
        (["nvcap:9.0"], ["nvcap:8.0", "nvptx:8.0"], "nvptx:8.0"),
        (["nvcap:12.0"], ["nvptx:5.2"], "nvptx:5.2"),
        (["nvcap:8.6"], ["nvptx:7.0", "nvcap:8.0"], "nvcap:8.0"),
        (["nvcap:8.6"], ["nvptx:8.6", "nvcap:8.0"], "nvcap:8.0"),
        (["nvcap:8.6"], ["nvptx:8.6", "nvcap:8.6a"], "nvcap:8.6a"),
        (["nvcap:9.0"], ["nvptx:9.0", "nvcap:9.0a"], "nvcap:9.0a"),
        (["nvcap:9.0"], ["nvptx:7.5", "nvptx:8.9"], "nvptx:8.9"),
        (["nvcap:9.0"], ["nvptx:9.1"], GENERIC),
        (["nvcap:8.6"], ["nvptx:8.9", "nvcap:8.9"], GENERIC),
        (["cpu:haswell"], ["nvptx:5.0"], GENERIC),  # PTX still needs a GPU
        ([], ["nvptx:5.0", "nvcap:5.0"], GENERIC),
    ],
)
def test_cuda_rules(machine: list[str], offered: list[str], expected: str) -> None:
    descriptors = [labelled(f, AMD64, f) for f in offered] + [labelled(GENERIC, AMD64)]
    assert choose(descriptors, machine) == [expected]


def test_two_gpus_nearest_capability_wins() -> None:
    """A machine with 7.5 and 8.6 cards: 7.5 matches one card exactly, 8.0 is 6 minors off."""
    descriptors = [
        labelled("nvcap:8.0", AMD64, "nvcap:8.0"),
        labelled("nvcap:7.5", AMD64, "nvcap:7.5"),
    ]
    assert choose(descriptors, ["nvcap:7.5", "nvcap:8.6"]) == ["nvcap:7.5"]


def test_ptx_reason_names_the_rule() -> None:
    index = make_index(entry("e", AMD64, "nvptx:9.1"))
    verdict = judge(index.entries[0], MachineProfile.of("m", ["nvcap:9.0"]), Matchers())
    assert not verdict.fits
    text = " ".join(verdict.reasons)
    assert "nvptx:9.1" in text
    assert "nvcap:9.0" in text


# --- at-least ----------------------------------------------------------------------------------

AT_LEAST = Matchers({"driver": "at-least", "kernel": "at-least", "glibc": "at-least"})


@pytest.mark.parametrize(
    ("machine", "offered", "expected"),
    [
        (["driver:535.54"], ["driver:535.54"], "driver:535.54"),
        (["driver:535.54"], ["driver:535.104"], GENERIC),  # numeric, not string, order
        (["driver:535.104"], ["driver:535.54"], "driver:535.54"),
        (["driver:535.54"], ["driver:470", "driver:525.60", "driver:550"], "driver:525.60"),
        (["driver:550.0"], ["driver:470.1", "driver:535"], "driver:535"),
        (["kernel:5.15.0"], ["kernel:5.4", "kernel:5.15", "kernel:6.1"], "kernel:5.15"),
        (["kernel:5.15"], ["kernel:5.15.1"], GENERIC),
        (["kernel:5.10"], ["kernel:5.9"], "kernel:5.9"),
        (["kernel:5.9"], ["kernel:5.10"], GENERIC),
        (["kernel:6.8.0"], ["kernel:4.18", "kernel:5.14.0"], "kernel:5.14.0"),
        (["glibc:2.35"], ["glibc:2.17", "glibc:2.28", "glibc:2.36"], "glibc:2.28"),
        (["glibc:2.28"], ["glibc:2.34", "glibc:2.35"], GENERIC),
        (["glibc:2.28"], ["driver:470"], GENERIC),  # another key: the machine has no driver
        (["driver:535"], ["driver:abc"], GENERIC),  # not a version
    ],
)
def test_at_least(machine: list[str], offered: list[str], expected: str) -> None:
    descriptors = [labelled(f, AMD64, f) for f in offered] + [labelled(GENERIC, AMD64)]
    assert choose(descriptors, machine, AT_LEAST) == [expected]


def test_at_least_only_where_assigned() -> None:
    """Without the assignment, `kernel` is an unknown key and matched exactly; `driver` and
    `cuda` (what `metahub detect` reports from NVML) are at-least by default."""
    descriptors = [labelled("kernel:5.10", AMD64, "kernel:5.10"), labelled(GENERIC, AMD64)]
    assert choose(descriptors, ["kernel:5.15"]) == [GENERIC]
    assert choose(descriptors, ["kernel:5.15"], AT_LEAST) == ["kernel:5.10"]
    assert choose(descriptors, ["kernel:5.10"]) == ["kernel:5.10"]
    for key in ("driver", "cuda"):
        descriptors = [labelled(f"{key}:12.0", AMD64, f"{key}:12.0"), labelled(GENERIC, AMD64)]
        assert choose(descriptors, [f"{key}:12.4"]) == [f"{key}:12.0"]
        assert choose(descriptors, [f"{key}:11.8"]) == [GENERIC]


def test_at_least_combines_with_cpu_and_cuda() -> None:
    descriptors = [
        labelled("cuda-new", AMD64, "cpu:x86_64_v3", "nvcap:8.0", "driver:545"),
        labelled("cuda-old", AMD64, "cpu:x86_64_v3", "nvcap:8.0", "driver:470"),
        labelled("cpu-only", AMD64, "cpu:haswell"),
        labelled(GENERIC, AMD64),
    ]
    machine = ["cpu:zen3", "nvcap:8.6", "driver:535.54"]
    assert choose(descriptors, machine, AT_LEAST) == ["cuda-old"]
    assert choose(descriptors, ["cpu:zen3", "nvcap:8.6", "driver:550"], AT_LEAST) == ["cuda-new"]
    assert choose(descriptors, ["cpu:zen3", "nvcap:9.0", "driver:550"], AT_LEAST) == [GENERIC]
    assert choose(descriptors, ["cpu:skylake", "nvcap:9.0"], AT_LEAST) == ["cpu-only"]


# --- aliases -----------------------------------------------------------------------------------

ALIASED = Matchers(aliases={"cpu": {"corp-gen3": "icelake", "corp-gen2": "skylake_avx512"}})


@pytest.mark.parametrize(
    ("machine", "offered", "expected"),
    [
        ("corp-gen3", ["cascadelake", "sapphirerapids", "haswell"], "cascadelake"),
        ("corp-gen3", ["corp-gen2", "haswell"], "corp-gen2"),
        ("corp-gen2", ["corp-gen3", "cascadelake"], GENERIC),
        ("corp-gen2", ["corp-gen3", "broadwell"], "broadwell"),
        ("icelake", ["corp-gen3", "cascadelake"], "corp-gen3"),
        ("cascadelake", ["corp-gen3", "corp-gen2"], "corp-gen2"),
        ("haswell", ["corp-gen2"], GENERIC),
        ("corp-gen3", ["corp-gen3"], "corp-gen3"),
        ("coffeelake", ["broadwell", "corp-gen2"], "broadwell"),  # built-in aliases still apply
    ],
)
def test_configured_cpu_aliases(machine: str, offered: list[str], expected: str) -> None:
    resolve = {"corp-gen3": "icelake", "corp-gen2": "skylake_avx512", "coffeelake": "skylake"}
    canonical = [resolve.get(name, name) for name in offered]
    oracle = oracle_cpu_choice(resolve.get(machine, machine), canonical)
    assert (GENERIC if oracle == GENERIC else offered[canonical.index(oracle)]) == expected
    descriptors = [labelled(n, AMD64, f"cpu:{n}") for n in offered] + [labelled(GENERIC, AMD64)]
    assert choose(descriptors, [f"cpu:{machine}"], ALIASED) == [expected]


def test_aliases_are_not_global() -> None:
    descriptors = [labelled("cascadelake", AMD64, "cpu:cascadelake"), labelled(GENERIC, AMD64)]
    assert choose(descriptors, ["cpu:corp-gen3"]) == [GENERIC]
    assert choose(descriptors, ["cpu:corp-gen3"], ALIASED) == ["cascadelake"]


# --- exact mode --------------------------------------------------------------------------------

SEED = [
    labelled("broadwell", AMD64, "cpu:broadwell"),
    labelled("skylake", AMD64, "cpu:skylake"),
    labelled(GENERIC, AMD64),
    labelled("broadwell-nvcap", AMD64, "cpu:broadwell", "nvcap:5.2"),
    labelled("arm64", ARM64),
]


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        (["cpu:skylake"], ["skylake"]),
        (["cpu:broadwell"], ["broadwell"]),
        (["cpu:broadwell", "nvcap:5.2"], ["broadwell-nvcap"]),
        (["nvcap:5.2", "cpu:broadwell"], ["broadwell-nvcap"]),
        ([], [GENERIC, "arm64"]),
    ],
)
def test_exact_mode(machine: list[str], expected: list[str]) -> None:
    assert choose(SEED, machine, mode="exact") == expected


@pytest.mark.parametrize(
    "machine",
    [
        ["cpu:coffeelake"],  # no aliases
        ["cpu:cascadelake"],  # no lineage
        ["cpu:skylake", "nvcap:5.2"],  # no subset
        ["cpu:broadwell", "nvcap:5.3"],  # no CUDA rule
        ["nvcap:5.2"],
    ],
)
def test_exact_mode_without_an_equal_set(machine: list[str]) -> None:
    with pytest.raises(NoMatchingEntry):
        choose(SEED, machine, mode="exact")
    assert choose(SEED, machine, mode="best")  # best mode finds something for each


def test_exact_mode_first_equal_entry_per_platform_and_attestations() -> None:
    descriptors = [
        labelled("first", AMD64, "cpu:skylake", "gpu:t4"),
        labelled("second", AMD64, "gpu:t4", "cpu:skylake"),
        labelled("arm-t4", ARM64, "gpu:t4", "cpu:skylake"),
        labelled_attestation("att-second", of="second"),
        labelled_attestation("att-first", of="first"),
    ]
    kept = choose(descriptors, ["gpu:t4", "cpu:skylake"], mode="exact")
    assert kept == ["first", "arm-t4", "att-first"]


def test_exact_mode_verdict_says_what_differs() -> None:
    index = make_index(*SEED)
    machine = MachineProfile.of("m", ["cpu:skylake", "nvcap:5.2"], mode="exact")
    verdict = judge(index.entries[1], machine, Matchers())  # cpu:skylake only
    assert not verdict.fits
    assert "nvcap:5.2" in " ".join(verdict.reasons)


# --- platforms ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("platforms", "expected"),
    [
        (["linux/amd64"], ["skylake"]),
        (["linux/arm64"], ["arm64"]),
        (["linux/arm64/v8"], ["arm64"]),
        (["linux/arm64", "linux/amd64"], ["skylake", "arm64"]),
        (["linux/amd64/v3"], ["skylake-v3"]),
        # A skylake decides between the amd64 levels: one amd64 entry, the earlier of two
        # equally close skylake builds (the v3 level says no more than cpu:skylake).
        (["linux/amd64", "linux/amd64/v3"], ["skylake"]),
        (["linux/arm/v7"], ["armv7"]),
    ],
)
def test_platforms_list(platforms: list[str], expected: list[str]) -> None:
    descriptors = [
        labelled("skylake", AMD64, "cpu:skylake"),
        labelled(GENERIC, AMD64),
        labelled("skylake-v3", AMD64_V3, "cpu:skylake"),
        labelled("v2", AMD64_V2),
        labelled("arm64", ARM64),
        labelled("armv7", ARM_V7),
    ]
    assert choose(descriptors, ["cpu:skylake"], platforms=platforms) == expected


@pytest.mark.parametrize("declared", ["linux/arm64", "linux/arm64/v8"])
@pytest.mark.parametrize("offered", [ARM64, ARM64_V8])
def test_arm64_v8_is_arm64(declared: str, offered: dict[str, str]) -> None:
    descriptors = [labelled("amd", AMD64), labelled("arm", offered, "cpu:neoverse_n1")]
    assert choose(descriptors, ["cpu:neoverse_v1"], platforms=[declared]) == ["arm"]


def test_arm64_and_arm64_v8_are_one_platform() -> None:
    """An index listing arm64 and arm64/v8 offers one platform: only one entry may stay."""
    descriptors = [
        labelled("arm-generic", ARM64_V8),
        labelled("arm-n1", ARM64, "cpu:neoverse_n1"),
        labelled("arm-v8-a64fx", ARM64_V8, "cpu:a64fx"),
    ]
    assert choose(descriptors, ["cpu:neoverse_v1"]) == ["arm-n1"]
    assert choose(descriptors, ["cpu:a64fx"]) == ["arm-v8-a64fx"]
    assert choose(descriptors, ["cpu:haswell"]) == ["arm-generic"]


def test_platform_restriction_is_explained() -> None:
    index = make_index(*SEED)
    machine = MachineProfile.of("m", ["cpu:skylake"], platforms=["linux/amd64"])
    selection = select(index, machine, Matchers())
    arm = selection.verdicts[4]
    assert not arm.fits and not arm.chosen
    assert "linux/arm64" in " ".join(arm.reasons)
    assert "linux/amd64" in " ".join(arm.reasons)


def test_no_declared_platform_offered() -> None:
    with pytest.raises(NoMatchingEntry):
        choose(SEED, ["cpu:skylake"], platforms=["linux/ppc64le"])


# --- attestations ------------------------------------------------------------------------------


def test_attestations_follow_their_image_across_platforms() -> None:
    descriptors = [
        labelled("skylake", AMD64, "cpu:skylake"),
        labelled("haswell", AMD64, "cpu:haswell"),
        labelled("arm64", ARM64),
        labelled_attestation("att-haswell", of="haswell"),
        labelled_attestation("att-skylake", of="skylake"),
        labelled_attestation("att-arm64", of="arm64"),
        labelled_attestation("att-arm64-sbom", of="arm64"),
        labelled_attestation("att-gone", of="not-in-this-index"),
    ]
    assert choose(descriptors, ["cpu:haswell"]) == [
        "haswell",
        "arm64",
        "att-haswell",
        "att-arm64",
        "att-arm64-sbom",
    ]
    assert choose(descriptors, ["cpu:icelake"]) == [
        "skylake",
        "arm64",
        "att-skylake",
        "att-arm64",
        "att-arm64-sbom",
    ]
    assert choose(descriptors, ["cpu:icelake"], platforms=["linux/amd64"]) == [
        "skylake",
        "att-skylake",
    ]
    assert choose(descriptors, ["cpu:haswell"], mode="exact") == ["haswell", "att-haswell"]


def test_attestation_of_a_dropped_entry_is_explained() -> None:
    index = make_index(
        labelled("skylake", AMD64, "cpu:skylake"),
        labelled(GENERIC, AMD64),
        labelled_attestation("att-skylake", of="skylake"),
    )
    selection = select(index, MachineProfile.of("m", ["cpu:haswell"]), Matchers())
    att = selection.verdicts[2]
    assert not att.chosen
    assert att.reasons


# --- mixed ranking -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("machine", "descriptors", "expected"),
    [
        # two satisfied features beat one, however close the one
        (
            ["cpu:sapphirerapids", "nvcap:8.6"],
            [("exact-cpu", "cpu:sapphirerapids"), ("far-two", "cpu:x86_64_v2", "nvcap:8.0")],
            "far-two",
        ),
        (
            ["cpu:zen4", "gpu:t4", "driver:535"],
            [("zen4", "cpu:zen4"), ("two", "cpu:x86_64", "gpu:t4")],
            "two",
        ),
        (
            ["cpu:neoverse_v1", "nvcap:9.0"],
            [("v1", "cpu:neoverse_v1"), ("ptx", "cpu:aarch64", "nvptx:5.0")],
            "ptx",
        ),
        # equal counts: closeness decides, on either key
        (
            ["cpu:skylake", "nvcap:8.6"],
            [("far-gpu", "cpu:haswell", "nvcap:8.0"), ("near-gpu", "cpu:haswell", "nvcap:8.6")],
            "near-gpu",
        ),
        (
            ["cpu:cascadelake", "nvcap:8.6"],
            [("far-cpu", "cpu:haswell", "nvcap:8.6"), ("near-cpu", "cpu:skylake", "nvcap:8.6")],
            "near-cpu",
        ),
        (
            ["cpu:cascadelake", "nvcap:8.6"],
            [("cubin", "cpu:haswell", "nvcap:8.0"), ("ptx", "cpu:haswell", "nvptx:8.6")],
            "cubin",
        ),
        # equal counts and closeness: index order
        (
            ["cpu:skylake", "gpu:t4"],
            [("first", "cpu:skylake", "gpu:t4"), ("second", "gpu:t4", "cpu:skylake")],
            "first",
        ),
        (["gpu:t4", "os:ubuntu"], [("first", "os:ubuntu"), ("second", "gpu:t4")], "first"),
        (["gpu:t4", "os:ubuntu"], [("first", "gpu:t4"), ("second", "os:ubuntu")], "first"),
        (["cpu:zen3"], [("first", "cpu:zen2"), ("second", "cpu:zen2")], "first"),
    ],
)
def test_mixed_ranking(
    machine: list[str], descriptors: list[tuple[str, ...]], expected: str
) -> None:
    built = [labelled(label, AMD64, *features) for label, *features in descriptors]
    assert choose(built, machine, AT_LEAST) == [expected]


def test_more_satisfied_even_behind_in_the_index() -> None:
    descriptors = [
        labelled("one", AMD64, "cpu:skylake"),
        labelled(GENERIC, AMD64),
        labelled("three", AMD64, "cpu:x86_64", "nvcap:7.0", "gpu:v100"),
        labelled("two", AMD64, "cpu:skylake", "nvcap:7.0"),
    ]
    assert choose(descriptors, ["cpu:skylake", "nvcap:7.0", "gpu:v100"]) == ["three"]
    assert choose(descriptors, ["cpu:skylake", "nvcap:7.5"]) == ["two"]
    assert choose(descriptors, ["cpu:skylake", "nvcap:8.0"]) == ["one"]


def test_verdict_scores() -> None:
    index = make_index(
        labelled("two", AMD64, "cpu:haswell", "nvcap:8.0"),
        labelled("one", AMD64, "cpu:skylake"),
        labelled(GENERIC, AMD64),
    )
    selection = select(index, MachineProfile.of("m", ["cpu:skylake", "nvcap:8.0"]), Matchers())
    two, one, generic = selection.verdicts
    assert (two.satisfied, one.satisfied, generic.satisfied) == (2, 1, 0)
    assert one.distance == 0  # exact cpu match
    assert two.distance > 0  # haswell is an ancestor of skylake, not skylake itself
    assert [v.chosen for v in selection.verdicts] == [True, False, False]

"""Properties of selection over generated indexes and machines, against an oracle written here.

The oracle knows the rules from the issue, not from the code: archspec ancestry for `cpu` (with
the documented aliases and one configured here), CUDA's rule for `nvcap` (X.y runs on X.z with
z >= y; X.ya only on X.y) and `nvptx` (any capability >= X.Y), dotted versions for `driver`
and `cuda` (`at-least` by default, not configured here), a declared flag or archspec's feature
list of the machine's cpu for `cpuflag`, and equality for any other key. Platforms compare on
os, architecture and variant, with arm64/v8 read as arm64; except that for a machine with an
x86-64 `cpu` every amd64 variant is one platform whose `vN` requires `cpu:x86_64_vN` (v1 and
none require nothing), and for one with an aarch64 `cpu` every arm64 variant is one platform
whose `v8.N` requires `cpu:armv8.Na` and `v9` `cpu:armv9.0a` (a cpu of its own on the entry
says more: the level then must fit but is not counted).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import archspec.cpu
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from metahub.features.selection import (
    MachineProfile,
    Matchers,
    NoMatchingEntry,
    Selection,
    judge,
    select,
)
from metahub.oci.index import Entry, Index
from tests.support.oci import OCI_MANIFEST, REFERENCE_DIGEST, REFERENCE_TYPE, make_index, sha

TARGETS = archspec.cpu.TARGETS

# The documented built-in aliases (two of them) and one configured for these tests.
CPU_ALIASES = {"coffeelake": "skylake", "kabylake": "skylake", "corp-gen3": "icelake"}
MATCHERS = Matchers(aliases={"cpu": {"corp-gen3": "icelake"}})

CPU_VALUES = [
    "x86_64",
    "x86_64_v2",
    "x86_64_v3",
    "x86_64_v4",
    "haswell",
    "broadwell",
    "skylake",
    "skylake_avx512",
    "cascadelake",
    "icelake",
    "sapphirerapids",
    "zen",
    "zen2",
    "zen3",
    "zen4",
    "aarch64",
    "armv8.2a",
    "armv8.4a",
    "neoverse_n1",
    "neoverse_v1",
    "a64fx",
    "coffeelake",
    "kabylake",
    "corp-gen3",
    "mycpu",
]
NVCAP_MACHINE = ["5.2", "7.0", "7.5", "8.0", "8.6", "8.9", "9.0", "10.0"]
NVCAP_ENTRY = [*NVCAP_MACHINE, "9.0a", "8.6a"]
NVPTX_ENTRY = ["5.2", "8.0", "9.0"]
DRIVERS = ["470", "525.60", "535.54", "535.104", "550"]
CUDAS = ["11.8", "12.0", "12.2", "12.4"]
GPUS = ["t4", "a100"]

ENTRY_FEATURES = (
    [f"cpu:{v}" for v in CPU_VALUES]
    + [f"nvcap:{v}" for v in NVCAP_ENTRY]
    + [f"nvptx:{v}" for v in NVPTX_ENTRY]
    + [f"driver:{v}" for v in DRIVERS]
    + [f"cuda:{v}" for v in CUDAS]
    + [f"gpu:{v}" for v in GPUS]
)
MACHINE_FEATURES = (
    [f"cpu:{v}" for v in CPU_VALUES]
    + [f"nvcap:{v}" for v in NVCAP_MACHINE]
    + [f"driver:{v}" for v in DRIVERS]
    + [f"cuda:{v}" for v in CUDAS]
    + [f"gpu:{v}" for v in GPUS]
)
MACHINE_KEYS = ["cpu", "nvcap", "driver", "cuda", "gpu"]

PLATFORMS = [
    {"os": "linux", "architecture": "amd64"},
    {"os": "linux", "architecture": "amd64", "variant": "v1"},
    {"os": "linux", "architecture": "amd64", "variant": "v2"},
    {"os": "linux", "architecture": "amd64", "variant": "v3"},
    {"os": "linux", "architecture": "amd64", "variant": "v4"},
    {"os": "linux", "architecture": "arm64"},
    {"os": "linux", "architecture": "arm64", "variant": "v8"},
    {"os": "linux", "architecture": "arm64", "variant": "v8.2"},
    {"os": "linux", "architecture": "arm64", "variant": "v9"},
    {"os": "linux", "architecture": "arm", "variant": "v7"},
]
PLATFORM_TEXTS = [
    "linux/amd64",
    "linux/amd64/v3",
    "linux/arm64",
    "linux/arm64/v8",
    "linux/arm64/v8.2",
    "linux/arm/v7",
]
# The levels as the issue defines them, written out rather than derived.
LEVELS = {
    ("amd64", "v2"): "x86_64_v2",
    ("amd64", "v3"): "x86_64_v3",
    ("amd64", "v4"): "x86_64_v4",
    ("arm64", "v8.2"): "armv8.2a",
    ("arm64", "v9"): "armv9.0a",
}
BASELINES = {("amd64", ""), ("amd64", "v1"), ("arm64", ""), ("arm64", "v8")}
FAMILY = {"amd64": "x86_64", "arm64": "aarch64"}


# --- the oracle --------------------------------------------------------------------------------


def _cpu(required: str, have: str) -> bool:
    required, have = CPU_ALIASES.get(required, required), CPU_ALIASES.get(have, have)
    if required == have:
        return True
    if required not in TARGETS or have not in TARGETS:
        return False
    return required in {t.name for t in TARGETS[have].ancestors}


def _capability(text: str) -> tuple[int, int]:
    major, minor = text.rstrip("a").split(".")
    return int(major), int(minor)


def _nvcap(required: str, have: str) -> bool:
    want, cap = _capability(required), _capability(have)
    if required.endswith("a"):
        return cap == want
    return cap[0] == want[0] and cap[1] >= want[1]


def _nvptx(required: str, have: str) -> bool:
    return _capability(have) >= _capability(required)


def _at_least(required: str, have: str) -> bool:
    want = [int(p) for p in required.split(".")]
    got = [int(p) for p in have.split(".")]
    width = max(len(want), len(got))
    return got + [0] * (width - len(got)) >= want + [0] * (width - len(want))


RULES = {"cpu": _cpu, "nvcap": _nvcap, "nvptx": _nvptx, "driver": _at_least, "cuda": _at_least}
JUDGED_BY = {"nvptx": "nvcap"}  # PTX is checked against the machine's capabilities


def judged_key(key: str) -> str:
    return JUDGED_BY.get(key, key)


def machine_values(machine: Iterable[str], key: str) -> list[str]:
    return [f.partition(":")[2] for f in machine if f.partition(":")[0] == key]


def feature_fits(feature: str, machine: list[str]) -> bool:
    key, _, value = feature.partition(":")
    rule = RULES.get(key, str.__eq__)
    return any(rule(value, have) for have in machine_values(machine, judged_key(key)))


def decides_levels(entry: Entry, machine: list[str]) -> bool:
    """Whether the machine's cpu chooses among this entry's architecture's variants."""
    arch, variant = entry.platform.architecture, entry.platform.variant
    if (arch, variant) not in LEVELS and (arch, variant) not in BASELINES:
        return False
    families = set()
    for cpu in machine_values(machine, "cpu"):
        cpu = CPU_ALIASES.get(cpu, cpu)
        if cpu in TARGETS:
            families.add(TARGETS[cpu].family.name)
    return FAMILY[arch] in families


def level(entry: Entry, machine: list[str]) -> str | None:
    """The cpu feature the entry's variant requires on this machine, if any."""
    if not decides_levels(entry, machine):
        return None
    target = LEVELS.get((entry.platform.architecture, entry.platform.variant))
    return f"cpu:{target}" if target else None


def requirements(entry: Entry, machine: list[str]) -> list[str]:
    """What counts as satisfied when the entry fits: its features, and its level unless it
    names a cpu of its own."""
    implied = level(entry, machine)
    own_cpu = any(f.startswith("cpu:") for f in entry.features)
    return [*entry.features, *([implied] if implied and not own_cpu else [])]


def group(entry: Entry, machine: list[str]) -> tuple[str, str, str]:
    os, arch, variant = norm(entry.platform)
    return (os, arch, "") if decides_levels(entry, machine) else (os, arch, variant)


def failing_keys(entry: Entry, machine: list[str]) -> set[str]:
    implied = level(entry, machine)
    required = [*entry.features, *([implied] if implied else [])]
    return {judged_key(f.partition(":")[0]) for f in required if not feature_fits(f, machine)}


def norm(platform: Any) -> tuple[str, str, str]:
    os, arch, variant = platform.os, platform.architecture, platform.variant
    if arch == "arm64" and variant == "v8":
        variant = ""
    return os, arch, variant


def norm_text(text: str) -> tuple[str, str, str]:
    os, arch, *rest = text.split("/")
    variant = rest[0] if rest else ""
    if arch == "arm64" and variant == "v8":
        variant = ""
    return os, arch, variant


def allowed(entry: Entry, platforms: list[str]) -> bool:
    return not platforms or norm(entry.platform) in {norm_text(p) for p in platforms}


def oracle_fits(entry: Entry, machine: list[str], platforms: list[str]) -> bool:
    return allowed(entry, platforms) and not failing_keys(entry, machine)


# --- generated inputs --------------------------------------------------------------------------


@st.composite
def indexes(draw: st.DrawFn) -> Index:
    count = draw(st.integers(1, 9))
    descriptors: list[dict[str, Any]] = []
    for i in range(count):
        platform = dict(draw(st.sampled_from(PLATFORMS)))
        features = draw(st.lists(st.sampled_from(ENTRY_FEATURES), max_size=3, unique=True))
        if features:
            platform["features"] = features
        descriptors.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": sha(f"e{i}"),
                "size": 10 + i,
                "platform": platform,
            }
        )
    for i in range(draw(st.integers(0, 3))):
        of = draw(st.integers(0, count))  # `count` names an image that is not in the index
        descriptors.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": sha(f"att{i}"),
                "size": 5,
                "platform": {"os": "unknown", "architecture": "unknown"},
                "annotations": {
                    REFERENCE_TYPE: "attestation-manifest",
                    REFERENCE_DIGEST: sha(f"e{of}"),
                },
            }
        )
    ordered = draw(st.permutations(descriptors))
    return make_index(*ordered)


machines = st.lists(st.sampled_from(MACHINE_FEATURES), max_size=4, unique=True)
platform_lists = st.one_of(
    st.just([]), st.lists(st.sampled_from(PLATFORM_TEXTS), min_size=1, max_size=2, unique=True)
)
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def is_attestation(entry: Entry) -> bool:
    return entry.annotations.get(REFERENCE_TYPE) == "attestation-manifest"


def images(index: Index) -> list[Entry]:
    return [e for e in index.entries if not is_attestation(e)]


def run(
    index: Index, features: list[str], platforms: list[str], mode: str = "best"
) -> Selection | None:
    profile = MachineProfile.of("m", features, mode=mode, platforms=platforms)  # type: ignore[arg-type]
    try:
        return select(index, profile, MATCHERS)
    except NoMatchingEntry:
        return None


def chosen_images(selection: Selection) -> list[Entry]:
    """The chosen entries as the index has them (not under the platform they are served as)."""
    return [v.entry for v in selection.verdicts if v.chosen and not is_attestation(v.entry)]


def served_images(selection: Selection) -> list[Entry]:
    """The entries of the filtered index, under the platform each is served as."""
    return [e for e in selection.kept if not is_attestation(e)]


# --- properties --------------------------------------------------------------------------------


@PROPERTY
@given(indexes(), machines, platform_lists)
def test_chosen_entry_always_fits(index: Index, features: list[str], platforms: list[str]) -> None:
    selection = run(index, features, platforms)
    fitting = [e for e in images(index) if oracle_fits(e, features, platforms)]
    if selection is None:
        assert fitting == []
        return
    for entry in chosen_images(selection):
        assert oracle_fits(entry, features, platforms), (entry.platform, entry.features)
    # and every platform where something fits gets its entry
    assert {group(e, features) for e in chosen_images(selection)} == {
        group(e, features) for e in fitting
    }


@PROPERTY
@given(indexes(), machines, platform_lists, st.randoms(use_true_random=False))
def test_choice_is_deterministic(
    index: Index, features: list[str], platforms: list[str], random: Any
) -> None:
    first = run(index, features, platforms)
    again = run(index, features, platforms)
    reparsed = run(Index.parse(json.dumps(index.document).encode()), features, platforms)
    shuffled = list(features)
    random.shuffle(shuffled)
    reordered = run(index, shuffled, platforms)
    outcomes = [
        None if s is None else [e.digest for e in s.kept]
        for s in (first, again, reparsed, reordered)
    ]
    assert outcomes.count(outcomes[0]) == 4, outcomes
    if first is not None:
        assert again is not None
        assert index.with_entries(first.kept) == index.with_entries(again.kept)


@PROPERTY
@given(indexes(), machines, st.sampled_from(MACHINE_FEATURES))
def test_a_new_key_never_rescues_an_entry_that_failed_on_another_key(
    index: Index, features: list[str], added: str
) -> None:
    new_key = added.partition(":")[0]
    assume(new_key not in {f.partition(":")[0] for f in features})
    before = MachineProfile.of("m", features)
    after = MachineProfile.of("m", [*features, added])
    for entry in images(index):
        failed = failing_keys(entry, features)
        assert judge(entry, before, MATCHERS).fits is (not failed)
        fits_after = judge(entry, after, MATCHERS).fits
        assert fits_after is (not failing_keys(entry, [*features, added]))
        if failed - {new_key}:
            assert not fits_after, (entry.features, features, added)
    # At the level of the served index: what was chosen for another reason stays unchanged
    # unless the new key made a rival fit (a new cpu may also make the levels one choice).
    first, second = run(index, features, []), run(index, [*features, added], [])
    if first is not None and new_key != "cpu":
        assert second is not None
        newly = {
            e.digest
            for e in images(index)
            if failing_keys(e, features) and not failing_keys(e, [*features, added])
        }
        # One choice per platform, and for a machine whose cpu decides the levels one choice
        # per architecture's levels (`amd64` and `amd64/v1` are one choice).
        levels = MATCHERS.levels(after)
        for entry in chosen_images(first):
            if entry not in chosen_images(second):
                assert entry.platform is not None
                choice = levels.group(entry.platform)
                rivals = [
                    e
                    for e in chosen_images(second)
                    if e.platform is not None and levels.group(e.platform) == choice
                ]
                assert rivals and rivals[0].digest in newly


@PROPERTY
@given(indexes(), machines, platform_lists)
def test_generic_only_when_nothing_with_features_fits(
    index: Index, features: list[str], platforms: list[str]
) -> None:
    selection = run(index, features, platforms)
    if selection is None:
        return
    for entry in chosen_images(selection):
        if requirements(entry, features):
            continue
        featured_rivals = [
            e
            for e in images(index)
            if requirements(e, features)
            and group(e, features) == group(entry, features)
            and oracle_fits(e, features, platforms)
        ]
        assert featured_rivals == [], [e.features for e in featured_rivals]
    for key in {group(e, features) for e in images(index)}:
        members = [e for e in images(index) if group(e, features) == key]
        if any(requirements(e, features) and oracle_fits(e, features, platforms) for e in members):
            chosen = [e for e in chosen_images(selection) if group(e, features) == key]
            assert chosen and requirements(chosen[0], features)


@PROPERTY
@given(indexes(), machines, platform_lists)
def test_at_most_one_entry_per_platform(
    index: Index, features: list[str], platforms: list[str]
) -> None:
    for mode in ("best", "exact"):
        selection = run(index, features, platforms, mode)
        if selection is None:
            continue
        keys = [norm(e.platform) for e in served_images(selection)]
        assert len(keys) == len(set(keys)), (mode, keys)


@PROPERTY
@given(indexes(), machines, platform_lists)
def test_exact_mode_keeps_the_first_equal_feature_set_per_platform(
    index: Index, features: list[str], platforms: list[str]
) -> None:
    expected: dict[tuple[str, str, str], Entry] = {}
    for entry in images(index):
        if set(entry.features) == set(features) and allowed(entry, platforms):
            expected.setdefault(norm(entry.platform), entry)
    selection = run(index, features, platforms, "exact")
    if not expected:
        assert selection is None
        return
    assert selection is not None
    chosen_digests = {e.digest for e in expected.values()}
    assert [e.digest for e in chosen_images(selection)] == [
        e.digest for e in images(index) if e.digest in chosen_digests
    ]
    attestations = [e for e in selection.kept if is_attestation(e)]
    assert [e.digest for e in attestations] == [
        e.digest
        for e in index.entries
        if is_attestation(e) and e.annotations[REFERENCE_DIGEST] in chosen_digests
    ]


@PROPERTY
@given(indexes(), machines, platform_lists)
def test_platforms_and_attestations(
    index: Index, features: list[str], platforms: list[str]
) -> None:
    selection = run(index, features, platforms)
    if selection is None:
        return
    chosen = {e.digest for e in chosen_images(selection)}
    for entry in chosen_images(selection):
        assert allowed(entry, platforms)
    for entry in index.entries:
        if is_attestation(entry):
            assert (entry in selection.kept) is (entry.annotations[REFERENCE_DIGEST] in chosen)


@PROPERTY
@given(indexes(), machines, platform_lists)
def test_ranking_is_never_beaten_by_a_clearly_better_rival(
    index: Index, features: list[str], platforms: list[str]
) -> None:
    """More features satisfied wins; then, within one key, the clearly closer value wins."""
    selection = run(index, features, platforms)
    if selection is None:
        return
    for entry in chosen_images(selection):
        rivals = [
            e
            for e in images(index)
            if group(e, features) == group(entry, features) and oracle_fits(e, features, platforms)
        ]
        counted = len(set(requirements(entry, features)))
        assert counted == max(len(set(requirements(e, features))) for e in rivals)
        if counted != 1:
            continue
        key, _, value = requirements(entry, features)[0].partition(":")
        for rival in rivals:
            if len(set(requirements(rival, features))) != 1 or rival is entry:
                continue
            r_key, _, r_value = requirements(rival, features)[0].partition(":")
            if key == r_key == "cpu":
                # the rival descends from the chosen one: it is the more derived build
                canon, r_canon = CPU_ALIASES.get(value, value), CPU_ALIASES.get(r_value, r_value)
                assert not (canon != r_canon and _cpu(canon, r_canon)), (value, r_value)
            if key == "nvptx":
                assert r_key != "nvcap", "a fitting cubin lost to PTX"
            if key == r_key == "nvcap" and len(machine_values(features, "nvcap")) == 1:
                cap = _capability(machine_values(features, "nvcap")[0])
                assert minors_off(value, cap) <= minors_off(r_value, cap), (value, r_value)


def minors_off(required: str, cap: tuple[int, int]) -> int:
    """How far a fitting cubin is from the card: 0 for an exact or architecture-specific one."""
    return 0 if required.endswith("a") else cap[1] - _capability(required)[1]


# --- cpu flags ---------------------------------------------------------------------------------

# Flags archspec lists for some of CPU_VALUES, and some no microarchitecture of archspec has.
FLAGS = ["sse4_2", "avx", "avx2", "avx512f", "avx512bw", "amx_tile", "asimd", "sve", "sve2"]
FLAGS += ["myflag", "vendor_ext_1"]
cpus = st.lists(st.sampled_from(CPU_VALUES), max_size=2, unique=True)
flag_sets = st.lists(st.sampled_from(FLAGS), min_size=1, max_size=4, unique=True)


def flag_judgement(required: list[str], declared: list[str], machine_cpus: list[str]) -> Any:
    entry = make_index(
        {
            "mediaType": OCI_MANIFEST,
            "digest": sha("flags"),
            "size": 10,
            "platform": {
                "os": "linux",
                "architecture": "amd64",
                "features": [f"cpuflag:{f}" for f in required],
            },
        }
    ).entries[0]
    features = [f"cpuflag:{f}" for f in declared] + [f"cpu:{c}" for c in machine_cpus]
    return judge(entry, MachineProfile.of("m", features), MATCHERS)


def cpu_has(cpu: str, flag: str) -> bool:
    canonical = CPU_ALIASES.get(cpu, cpu)
    return canonical in TARGETS and flag in TARGETS[canonical].features


@PROPERTY
@given(flag_sets, st.lists(st.sampled_from(FLAGS), max_size=3), cpus)
def test_declaring_every_required_flag_always_satisfies(
    required: list[str], more: list[str], machine_cpus: list[str]
) -> None:
    verdict = flag_judgement(required, [*more, *required], machine_cpus)
    assert verdict.fits, verdict.reasons
    assert verdict.satisfied == len(required)
    assert verdict.distance == 0


@PROPERTY
@given(flag_sets, st.lists(st.sampled_from(FLAGS), max_size=3), cpus, st.sampled_from(FLAGS))
def test_requiring_a_flag_the_machine_lacks_never_satisfies(
    required: list[str], declared: list[str], machine_cpus: list[str], lacking: str
) -> None:
    assume(lacking not in declared and not any(cpu_has(c, lacking) for c in machine_cpus))
    verdict = flag_judgement([*required, lacking], declared, machine_cpus)
    assert not verdict.fits
    assert any(f"cpuflag:{lacking}" in reason for reason in verdict.reasons)


# --- levels ------------------------------------------------------------------------------------


@PROPERTY
@given(indexes(), machines, platform_lists)
def test_a_chosen_level_is_served_under_the_baseline_platform(
    index: Index, features: list[str], platforms: list[str]
) -> None:
    """Runtimes take no variant they do not expect: a level the machine's cpu chose is listed
    as its architecture's baseline, unless the declared platforms leave the baseline out; only
    the platform changes."""
    selection = run(index, features, platforms)
    if selection is None:
        return
    served = {e.position: e for e in served_images(selection)}
    for entry in chosen_images(selection):
        listed = served[entry.position]
        assert {k: v for k, v in listed.descriptor.items() if k != "platform"} == {
            k: v for k, v in entry.descriptor.items() if k != "platform"
        }
        os, arch, _ = norm(entry.platform)
        baseline = (os, arch, "")
        if decides_levels(entry, features) and (
            not platforms or baseline in {norm_text(p) for p in platforms}
        ):
            assert norm(listed.platform) == baseline
            if norm(entry.platform) == baseline and entry.platform.variant != "v1":
                assert listed.descriptor == entry.descriptor  # already what runtimes take
            else:
                variant = listed.descriptor["platform"].get("variant", "")
                assert variant == ("v8" if arch == "arm64" else "")
        else:
            assert listed.descriptor == entry.descriptor

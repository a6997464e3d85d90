"""Selection: one best-fitting entry per platform, for the machine type that logged in.

Expected choices come from the product's defining example and from an oracle written here
(archspec ancestry, CUDA's minor-version rule, exact match), not from the selection code.
"""

from __future__ import annotations

import json
from typing import Any

import archspec.cpu
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metahub.features.model import InvalidFeature
from metahub.features.selection import (
    MachineProfile,
    Matchers,
    NoMatchingEntry,
    Selection,
    judge,
    select,
)
from metahub.oci.index import Index
from metahub.oci.platform import PlatformKey
from tests.support.oci import AMD64, ARM64, OCI_INDEX, attestation, entry, make_index, sha


def labels(selection: Selection) -> set[str]:
    by_digest = {sha(label): label for label in ALL_LABELS}
    return {by_digest.get(e.digest, e.digest) for e in selection.kept}


def machine(*features: str, name: str = "m") -> MachineProfile:
    return MachineProfile.of(name, list(features))


ALL_LABELS = [
    "broadwell",
    "skylake",
    "generic",
    "broadwell-nvcap",
    "arm64",
    "att-broadwell",
    "att-skylake",
    "att-generic",
    "artifact",
    "haswell",
    "skylake_avx512",
    "x86_64_v3",
    "nv52",
    "nv90a",
    "first",
    "second",
    "bad",
]

# The product's defining example.
SEED = make_index(
    entry("broadwell", AMD64, "cpu:broadwell"),
    entry("skylake", AMD64, "cpu:skylake"),
    entry("generic", AMD64),
    entry("broadwell-nvcap", AMD64, "cpu:broadwell", "nvcap:5.2"),
    entry("arm64", ARM64),
)


@pytest.fixture(scope="module")
def matchers() -> Matchers:
    return Matchers()


@pytest.mark.parametrize(
    ("features", "amd64_choice"),
    [
        (["cpu:broadwell"], "broadwell"),
        (["cpu:skylake"], "skylake"),
        (["cpu:coffeelake"], "skylake"),
        (["cpu:broadwell", "nvcap:5.2"], "broadwell-nvcap"),
        (["cpu:skylake", "nvcap:5.2"], "broadwell-nvcap"),
        (["cpu:broadwell", "nvcap:5.3"], "broadwell-nvcap"),
        (["cpu:broadwell", "nvcap:6.0"], "broadwell"),
        (["cpu:ivybridge"], "generic"),
        (["cpu:zen2"], "generic"),
        ([], "generic"),
        (["nvcap:5.2"], "generic"),
    ],
)
def test_seed(features: list[str], amd64_choice: str, matchers: Matchers) -> None:
    selection = select(SEED, machine(*features), matchers)
    assert labels(selection) == {amd64_choice, "arm64"}


def test_seed_keeps_one_entry_per_platform(matchers: Matchers) -> None:
    for features in (["cpu:skylake"], ["cpu:broadwell", "nvcap:5.2"], ["cpu:ivybridge"]):
        kept = select(SEED, machine(*features), matchers).kept
        platforms = [e.platform for e in kept]
        assert len(platforms) == len(set(platforms)) == 2


def test_seed_filtered_index_parses_back(matchers: Matchers) -> None:
    selection = select(SEED, machine("cpu:coffeelake"), matchers)
    out = Index.parse(SEED.with_entries(selection.kept))
    assert [e.digest for e in out.entries] == [sha("skylake"), sha("arm64")]
    assert out.media_type == OCI_INDEX


def test_verdicts_explain_every_entry(matchers: Matchers) -> None:
    selection = select(SEED, machine("cpu:broadwell"), matchers)
    verdicts = {v.entry.digest: v for v in selection.verdicts}
    assert len(verdicts) == 5
    assert verdicts[sha("broadwell")].chosen
    assert verdicts[sha("arm64")].chosen
    skylake = verdicts[sha("skylake")]
    assert not skylake.fits and not skylake.chosen
    assert any("cpu:skylake" in r for r in skylake.reasons)
    nvcap = verdicts[sha("broadwell-nvcap")]
    assert not nvcap.fits
    assert any("nvcap" in r for r in nvcap.reasons)
    generic = verdicts[sha("generic")]
    assert generic.fits and not generic.chosen
    assert generic.reasons


@pytest.mark.parametrize(
    ("features", "chosen"),
    [
        (["nvcap:5.2"], "nv52"),
        (["nvcap:5.3"], "nv52"),
        (["nvcap:5.9"], "nv52"),
        (["nvcap:5.0"], "generic"),
        (["nvcap:6.0"], "generic"),
        (["nvcap:9.0"], "nv90a"),
        (["nvcap:9.1"], "generic"),
        (["nvcap:10.0"], "generic"),
        (["nvcap:5.2", "nvcap:9.0"], "nv52"),  # two GPUs: both fit; the earlier entry wins a tie
    ],
)
def test_nvcap_rules(features: list[str], chosen: str, matchers: Matchers) -> None:
    index = make_index(
        entry("nv52", AMD64, "nvcap:5.2"),
        entry("nv90a", AMD64, "nvcap:9.0a"),
        entry("generic", AMD64),
    )
    assert labels(select(index, machine(*features), matchers)) == {chosen}


def test_group_with_no_fitting_entry_is_dropped(matchers: Matchers) -> None:
    index = make_index(entry("skylake", AMD64, "cpu:skylake"), entry("arm64", ARM64))
    selection = select(index, machine("cpu:broadwell"), matchers)
    assert labels(selection) == {"arm64"}


def test_no_matching_entry(matchers: Matchers) -> None:
    index = make_index(
        entry("skylake", AMD64, "cpu:skylake"),
        entry("broadwell-nvcap", AMD64, "cpu:broadwell", "nvcap:5.2"),
    )
    with pytest.raises(NoMatchingEntry) as info:
        select(index, machine("cpu:ivybridge", "nvcap:6.1", name="old-gpu-box"), matchers)
    message = str(info.value)
    assert "old-gpu-box" in message
    assert "cpu:ivybridge" in message
    assert "nvcap:6.1" in message
    assert "linux/amd64: cpu:skylake" in message
    assert "cpu:broadwell,nvcap:5.2" in message
    assert info.value.machine.name == "old-gpu-box"
    assert len(info.value.offered) == 2
    assert isinstance(info.value, LookupError)


def test_no_matching_entry_names_a_featureless_machine(matchers: Matchers) -> None:
    index = make_index(entry("skylake", AMD64, "cpu:skylake"))
    with pytest.raises(NoMatchingEntry, match="no features"):
        select(index, machine(), matchers)


def test_attestations_follow_their_image(matchers: Matchers) -> None:
    index = make_index(
        entry("broadwell", AMD64, "cpu:broadwell"),
        entry("skylake", AMD64, "cpu:skylake"),
        entry("generic", AMD64),
        attestation("att-broadwell", of="broadwell"),
        attestation("att-skylake", of="skylake"),
        attestation("att-generic", of="generic"),
    )
    assert labels(select(index, machine("cpu:skylake"), matchers)) == {"skylake", "att-skylake"}
    assert labels(select(index, machine("cpu:haswell"), matchers)) == {"generic", "att-generic"}


def test_attestations_are_not_counted_as_a_platform(matchers: Matchers) -> None:
    index = make_index(
        entry("skylake", AMD64, "cpu:skylake"),
        attestation("att-skylake", of="skylake"),
    )
    with pytest.raises(NoMatchingEntry):
        select(index, machine("cpu:broadwell"), matchers)


def test_entries_without_platform_are_kept(matchers: Matchers) -> None:
    index = make_index(
        entry("skylake", AMD64, "cpu:skylake"),
        entry("generic", AMD64),
        entry("artifact", None),
    )
    assert labels(select(index, machine("cpu:skylake"), matchers)) == {"skylake", "artifact"}


def test_unreadable_feature_never_fits(matchers: Matchers) -> None:
    index = make_index(entry("bad", AMD64, "broadwell"), entry("generic", AMD64))
    selection = select(index, machine("cpu:broadwell"), matchers)
    assert labels(selection) == {"generic"}
    bad = selection.verdicts[0]
    assert not bad.fits
    assert any("broadwell" in r for r in bad.reasons)


def test_ties_go_to_the_earlier_entry(matchers: Matchers) -> None:
    index = make_index(
        entry("first", AMD64, "cpu:haswell"),
        entry("second", AMD64, "cpu:haswell"),
    )
    assert labels(select(index, machine("cpu:skylake"), matchers)) == {"first"}


def test_more_features_satisfied_wins(matchers: Matchers) -> None:
    index = make_index(
        entry("skylake", AMD64, "cpu:skylake"),
        entry("broadwell-nvcap", AMD64, "cpu:broadwell", "nvcap:5.2"),
    )
    chosen = labels(select(index, machine("cpu:skylake", "nvcap:5.2"), matchers))
    assert chosen == {"broadwell-nvcap"}


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        (["haswell", "skylake_avx512", "broadwell"], "skylake_avx512"),
        (["skylake_avx512", "broadwell", "haswell"], "skylake_avx512"),
        (["x86_64_v3", "haswell"], "haswell"),
        (["haswell", "x86_64_v3"], "haswell"),
        (["x86_64_v3", "broadwell"], "broadwell"),
    ],
)
def test_most_derived_microarch_is_chosen(
    order: list[str], expected: str, matchers: Matchers
) -> None:
    ancestors = {t.name for t in archspec.cpu.TARGETS[expected].ancestors}
    assert set(order) - {expected} <= ancestors  # expected descends from every other entry
    index = make_index(*(entry(name, AMD64, f"cpu:{name}") for name in order))
    assert labels(select(index, machine("cpu:cascadelake"), matchers)) == {expected}


def test_matchers_configured_per_key() -> None:
    exact_cpu = Matchers({"cpu": "exact"})
    assert labels(select(SEED, machine("cpu:skylake"), exact_cpu)) == {"skylake", "arm64"}
    assert labels(select(SEED, machine("cpu:coffeelake"), exact_cpu)) == {"generic", "arm64"}
    custom = Matchers(aliases={"cpu": {"myhost": "skylake"}})
    assert labels(select(SEED, machine("cpu:myhost"), custom)) == {"skylake", "arm64"}


# Builds described by instruction-set flags; the AVX-512 build lists every flag it uses, as
# `-march`-level builds do, so a machine with both flags satisfies two of its features.
CPUFLAG_INDEX = make_index(
    entry("generic", AMD64),
    entry("first", AMD64, "cpuflag:avx2"),
    entry("second", AMD64, "cpuflag:avx2", "cpuflag:avx512f"),
)


def flags_of(cpu: str) -> set[str]:
    return set(archspec.cpu.TARGETS[cpu].features)


@pytest.mark.parametrize(
    ("features", "expected"),
    [
        (["cpu:haswell"], "first"),
        (["cpu:zen2"], "first"),
        (["cpu:skylake_avx512"], "second"),
        (["cpu:coffeelake"], "first"),
        (["cpuflag:avx2", "cpuflag:avx512f"], "second"),
        (["cpu:haswell", "cpuflag:avx512f"], "second"),
        (["cpu:ivybridge"], "generic"),
        (["nvcap:8.6"], "generic"),
        ([], "generic"),
    ],
)
def test_cpuflag_entries_go_to_machines_with_the_flags(
    features: list[str], expected: str, matchers: Matchers
) -> None:
    # The premises, from archspec: which of these cpus has which flag.
    assert {"avx2", "avx512f"} <= flags_of("skylake_avx512")
    assert "avx2" in flags_of("haswell") and "avx512f" not in flags_of("haswell")
    assert "avx2" in flags_of("zen2") and "avx512f" not in flags_of("zen2")
    assert "avx2" in flags_of("skylake") and "avx512f" not in flags_of("skylake")
    assert "avx2" not in flags_of("ivybridge")
    assert labels(select(CPUFLAG_INDEX, machine(*features), matchers)) == {expected}


def test_entries_needing_one_flag_each_tie_and_the_earlier_wins(matchers: Matchers) -> None:
    """Every flag fits at distance 0: one flag is not closer than another."""
    index = make_index(
        entry("first", AMD64, "cpuflag:avx2"), entry("second", AMD64, "cpuflag:sse4_2")
    )
    assert labels(select(index, machine("cpu:skylake_avx512"), matchers)) == {"first"}


def test_a_cpuflag_verdict_names_the_cpu_that_lacks_the_flag(matchers: Matchers) -> None:
    verdicts = select(CPUFLAG_INDEX, machine("cpu:haswell"), matchers).verdicts
    avx512 = next(v for v in verdicts if v.entry.digest == sha("second"))
    assert not avx512.fits and avx512.satisfied == 1
    assert avx512.reasons == (
        "cpuflag:avx512f: cpu haswell lacks avx512f, and the machine does not declare it",
    )


def test_what_a_selection_adds_to_one_verdict_is_on_that_verdict_alone(
    matchers: Matchers,
) -> None:
    """Entries of one kind share their remembered judgement; the reason one of them loses is
    its own, and does not stay behind for the next selection."""
    index = make_index(
        entry("first", AMD64, "cpu:haswell"),
        entry("second", AMD64, "cpu:haswell"),
        entry("third", AMD64, "cpu:haswell"),
    )
    for _ in range(2):
        verdicts = select(index, machine("cpu:skylake"), matchers).verdicts
        assert [v.chosen for v in verdicts] == [True, False, False]
        assert verdicts[0].reasons == ()
        assert verdicts[1].reasons == verdicts[2].reasons == ("entry 0 fits this platform better",)


def test_unknown_keys_are_matched_exactly(matchers: Matchers) -> None:
    index = make_index(entry("first", AMD64, "gpu:t4"), entry("generic", AMD64))
    assert labels(select(index, machine("gpu:t4"), matchers)) == {"first"}
    assert labels(select(index, machine("gpu:T4"), matchers)) == {"generic"}


def test_machine_profile() -> None:
    profile = MachineProfile.of("gpu", ["cpu:skylake", "nvcap:8.6", "nvcap:7.5"])
    assert profile.describe() == "cpu:skylake, nvcap:8.6, nvcap:7.5"
    assert dict(profile.by_key) == {"cpu": ("skylake",), "nvcap": ("8.6", "7.5")}
    assert MachineProfile.of("plain", []).describe() == "no features"
    with pytest.raises(InvalidFeature):
        MachineProfile.of("bad", ["skylake"])


# --- properties --------------------------------------------------------------------------------

ALIASES = {"coffeelake": "skylake"}  # the product's documented alias, written here by hand
CPU_VALUES = ["haswell", "broadwell", "skylake", "x86_64_v3", "zen2", "coffeelake", "mycpu"]
NVCAP_VALUES = ["5.2", "5.3", "6.0", "8.6", "9.0", "9.0a"]
GPU_VALUES = ["t4", "a100"]
PLATFORMS = [AMD64, ARM64, {"os": "linux", "architecture": "arm", "variant": "v7"}]

ENTRY_FEATURES = [f"cpu:{v}" for v in CPU_VALUES] + [f"nvcap:{v}" for v in NVCAP_VALUES]
ENTRY_FEATURES += [f"gpu:{v}" for v in GPU_VALUES]
MACHINE_FEATURES = [f"cpu:{v}" for v in CPU_VALUES if v != "x86_64_v3"]
MACHINE_FEATURES += [f"nvcap:{v}" for v in NVCAP_VALUES if not v.endswith("a")]
MACHINE_FEATURES += [f"gpu:{v}" for v in GPU_VALUES]


def _cpu_fits(required: str, have: str) -> bool:
    required, have = ALIASES.get(required, required), ALIASES.get(have, have)
    if required == have:
        return True
    targets = archspec.cpu.TARGETS
    if required not in targets or have not in targets:
        return False
    return required in {t.name for t in targets[have].ancestors}


def _cuda_fits(required: str, have: str) -> bool:
    exact = required.endswith("a")
    r_major, r_minor = (int(x) for x in required.rstrip("a").split("."))
    h_major, h_minor = (int(x) for x in have.split("."))
    if exact:
        return (h_major, h_minor) == (r_major, r_minor)
    return h_major == r_major and h_minor >= r_minor


def oracle_fits(features: tuple[str, ...], machine_features: list[str]) -> bool:
    for feature in features:
        key, _, value = feature.partition(":")
        have = [m.partition(":")[2] for m in machine_features if m.startswith(f"{key}:")]
        rule = {"cpu": _cpu_fits, "nvcap": _cuda_fits}.get(key, str.__eq__)
        if not any(rule(value, h) for h in have):
            return False
    return True


@st.composite
def indexes(draw: st.DrawFn) -> Index:
    count = draw(st.integers(1, 8))
    descriptors = []
    for i in range(count):
        platform = draw(st.sampled_from(PLATFORMS))
        features = draw(st.lists(st.sampled_from(ENTRY_FEATURES), max_size=3, unique=True))
        descriptors.append(entry(f"entry-{i}", platform, *features))
    for i in range(draw(st.integers(0, 2))):
        descriptors.append(attestation(f"att-{i}", of=f"entry-{draw(st.integers(0, count))}"))
    return make_index(*draw(st.permutations(descriptors)))


machines = st.lists(st.sampled_from(MACHINE_FEATURES), max_size=4, unique=True)
PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _is_attestation(candidate: Any) -> bool:
    return candidate.annotations.get("vnd.docker.reference.type") == "attestation-manifest"


def _images(index: Index) -> list[Any]:
    return [e for e in index.entries if not _is_attestation(e)]


def _select_or_none(index: Index, profile: MachineProfile) -> Selection | None:
    try:
        return select(index, profile, Matchers())
    except NoMatchingEntry:
        return None


@PROPERTY_SETTINGS
@given(indexes(), machines)
def test_property_chosen_entries_fit(index: Index, features: list[str]) -> None:
    profile = machine(*features)
    selection = _select_or_none(index, profile)
    if selection is None:
        assert not any(oracle_fits(e.features, features) for e in _images(index))
        return
    for kept in selection.kept:
        if _is_attestation(kept):
            continue
        assert judge(kept, profile, Matchers()).fits
        assert oracle_fits(kept.features, features), kept.features


@PROPERTY_SETTINGS
@given(indexes(), machines)
def test_property_every_platform_with_a_fit_gets_exactly_one(
    index: Index, features: list[str]
) -> None:
    selection = _select_or_none(index, machine(*features))
    fitting_platforms = {e.platform for e in _images(index) if oracle_fits(e.features, features)}
    if selection is None:
        assert fitting_platforms == set()
        return
    chosen = [e.platform for e in selection.kept if not _is_attestation(e)]
    assert len(chosen) == len(set(chosen))
    assert set(chosen) == fitting_platforms


@PROPERTY_SETTINGS
@given(indexes(), machines)
def test_property_selection_is_deterministic(index: Index, features: list[str]) -> None:
    first = _select_or_none(index, machine(*features))
    again = _select_or_none(Index.parse(json.dumps(index.document).encode()), machine(*features))
    if first is None:
        assert again is None
        return
    assert again is not None
    assert index.with_entries(first.kept) == index.with_entries(again.kept)


@PROPERTY_SETTINGS
@given(indexes(), machines)
def test_property_generic_only_when_no_featured_entry_fits(
    index: Index, features: list[str]
) -> None:
    selection = _select_or_none(index, machine(*features))
    if selection is None:
        return
    for kept in selection.kept:
        if _is_attestation(kept) or kept.features:
            continue
        rivals = [
            e
            for e in _images(index)
            if e.platform == kept.platform and e.features and oracle_fits(e.features, features)
        ]
        assert rivals == [], (kept.platform, [e.features for e in rivals])


@PROPERTY_SETTINGS
@given(indexes(), machines)
def test_property_most_features_satisfied(index: Index, features: list[str]) -> None:
    selection = _select_or_none(index, machine(*features))
    if selection is None:
        return
    for kept in selection.kept:
        if _is_attestation(kept):
            continue
        best = max(
            len(e.features)
            for e in _images(index)
            if e.platform == kept.platform and oracle_fits(e.features, features)
        )
        assert len(kept.features) == best


@PROPERTY_SETTINGS
@given(indexes(), machines)
def test_property_attestations_kept_only_with_their_image(
    index: Index, features: list[str]
) -> None:
    selection = _select_or_none(index, machine(*features))
    if selection is None:
        return
    chosen_digests = {e.digest for e in selection.kept if not _is_attestation(e)}
    for candidate in index.entries:
        if _is_attestation(candidate):
            referenced = candidate.annotations["vnd.docker.reference.digest"]
            assert (candidate in selection.kept) == (referenced in chosen_digests)


def test_platform_keys_used_by_properties_are_distinct() -> None:
    keys = {PlatformKey(p["os"], p["architecture"], p.get("variant", "")) for p in PLATFORMS}
    assert len(keys) == len(PLATFORMS)


def test_remembered_verdicts_follow_the_machine_type_when_it_changes() -> None:
    # Verdicts on feature sets are remembered per machine type revision: the same name with
    # other features (a machine type changed by an admin) must be judged afresh.
    matchers = Matchers()
    index = make_index(
        entry("haswell", AMD64, "cpu:haswell"),
        entry("skylake", AMD64, "cpu:skylake"),
        entry("generic", AMD64),
    )
    before = machine("cpu:skylake", name="node")
    after = machine("cpu:haswell", name="node")
    for _ in range(2):  # the second round is answered from what the first remembered
        assert labels(select(index, before, matchers)) == {"skylake"}
        assert labels(select(index, after, matchers)) == {"haswell"}
    hand_built = MachineProfile("node", before.features, before.by_key)  # no revision
    assert labels(select(index, hand_built, matchers)) == {"skylake"}
    # The reasons an entry was refused are the same whether remembered or not.
    refused = judge(index.entries[1], after, matchers)
    assert not refused.fits
    assert refused.reasons == judge(index.entries[1], after, Matchers()).reasons

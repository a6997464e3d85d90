"""Matchers, checked against archspec's own TARGETS relations and CUDA's compatibility rules."""

from __future__ import annotations

import itertools

import archspec.cpu
import pytest

from metahub.features.matchers import (
    BUILTIN_MATCHERS,
    DEFAULT_KEY_MATCHERS,
    AtLeastMatcher,
    CpuFlagMatcher,
    CudaMatcher,
    ExactMatcher,
    MatcherRegistry,
    MicroarchMatcher,
    UnknownMatcher,
)

TARGETS = archspec.cpu.TARGETS


def is_ancestor(older: str, newer: str) -> bool:
    """archspec's relation: code for `older` runs on `newer`."""
    return older in {t.name for t in TARGETS[newer].ancestors}


def runs_on(required: str, machine: str) -> bool:
    return required == machine or is_ancestor(required, machine)


# --- exact -------------------------------------------------------------------------------------


def test_exact_same_value_fits_at_distance_zero() -> None:
    fit = ExactMatcher().fit("gpu", "t4", {"gpu": ("t4",)})
    assert fit.ok
    assert fit.distance == 0


def test_exact_any_of_several_values() -> None:
    assert ExactMatcher().fit("gpu", "a100", {"gpu": ("t4", "a100")}).ok


@pytest.mark.parametrize("have", [("T4",), ("t4x",), ("a100",)])
def test_exact_other_value_does_not_fit(have: tuple[str, ...]) -> None:
    fit = ExactMatcher().fit("gpu", "t4", {"gpu": have})
    assert not fit.ok
    assert "gpu:t4" in fit.reason
    assert f"gpu:{have[0]}" in fit.reason


@pytest.mark.parametrize("matcher", [ExactMatcher(), MicroarchMatcher(), CudaMatcher()])
def test_missing_key_does_not_fit(matcher: ExactMatcher) -> None:
    fit = matcher.fit("k", "8.6", {"other": ("8.6",)})
    assert not fit.ok
    assert "k" in fit.reason
    assert not matcher.fit("k", "8.6", {"k": ()}).ok


# --- microarch ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("required", "machine", "expected"),
    [
        ("haswell", "haswell", True),
        ("haswell", "broadwell", True),
        ("haswell", "skylake", True),
        ("haswell", "cascadelake", True),
        ("broadwell", "skylake", True),
        ("skylake", "broadwell", False),
        ("skylake_avx512", "skylake", False),
        ("haswell", "zen2", False),
        ("x86_64_v3", "zen2", True),
        ("x86_64_v3", "haswell", True),
        ("x86_64_v4", "haswell", False),
        ("x86_64_v4", "cascadelake", True),
        ("x86_64", "zen2", True),
        ("zen", "zen2", True),
        ("zen2", "zen", False),
        ("zen2", "skylake", False),
        ("ivybridge", "haswell", True),
        ("haswell", "ivybridge", False),
        ("aarch64", "neoverse_v1", True),
        ("neoverse_n1", "neoverse_v1", True),
        ("neoverse_v1", "neoverse_n1", False),
        ("haswell", "neoverse_v1", False),
    ],
)
def test_microarch_fits_follow_archspec(required: str, machine: str, expected: bool) -> None:
    assert runs_on(required, machine) is expected  # the oracle agrees with the table
    fit = MicroarchMatcher().fit("cpu", required, {"cpu": (machine,)})
    assert fit.ok is expected
    if not expected:
        assert f"cpu:{required}" in fit.reason
        assert f"cpu:{machine}" in fit.reason


@pytest.mark.parametrize("machine", ["cascadelake", "icelake", "zen3", "neoverse_v1", "power9le"])
def test_microarch_fits_exactly_the_archspec_ancestors(machine: str) -> None:
    matcher = MicroarchMatcher()
    for required in TARGETS:
        assert matcher.fit("cpu", required, {"cpu": (machine,)}).ok is runs_on(required, machine), (
            required
        )


def test_exact_microarch_is_closest() -> None:
    matcher = MicroarchMatcher()
    exact = matcher.fit("cpu", "skylake", {"cpu": ("skylake",)})
    parent = matcher.fit("cpu", "broadwell", {"cpu": ("skylake",)})
    assert exact.distance == 0
    assert exact.distance < parent.distance


@pytest.mark.parametrize(
    ("machine", "derived", "ancestor"),
    [
        ("cascadelake", "skylake_avx512", "haswell"),
        ("cascadelake", "skylake_avx512", "broadwell"),
        ("cascadelake", "skylake", "haswell"),
        ("cascadelake", "broadwell", "haswell"),
        ("cascadelake", "haswell", "x86_64_v3"),
        ("cascadelake", "broadwell", "x86_64_v3"),
        ("skylake_avx512", "haswell", "x86_64_v3"),
        ("zen2", "zen", "x86_64_v3"),
        ("zen3", "zen2", "x86_64_v2"),
    ],
)
def test_microarch_more_derived_is_closer(machine: str, derived: str, ancestor: str) -> None:
    assert is_ancestor(ancestor, derived)
    assert runs_on(derived, machine)
    matcher = MicroarchMatcher()
    near = matcher.fit("cpu", derived, {"cpu": (machine,)})
    far = matcher.fit("cpu", ancestor, {"cpu": (machine,)})
    assert near.ok and far.ok
    assert near.distance < far.distance


@pytest.mark.parametrize("machine", ["cascadelake", "icelake", "sapphirerapids", "zen3"])
def test_microarch_distance_orders_every_lineage(machine: str) -> None:
    """For any two fitting targets where one descends from the other, the descendant is closer."""
    matcher = MicroarchMatcher()
    fitting = [name for name in TARGETS if runs_on(name, machine)]
    wrong = []
    for older, newer in itertools.permutations(fitting, 2):
        if is_ancestor(older, newer):
            near = matcher.fit("cpu", newer, {"cpu": (machine,)}).distance
            far = matcher.fit("cpu", older, {"cpu": (machine,)}).distance
            if not near < far:
                wrong.append((newer, near, older, far))
    assert wrong == []


@pytest.mark.parametrize(
    ("required", "machine", "expected"),
    [
        ("skylake", "coffeelake", True),
        ("broadwell", "coffeelake", True),
        ("coffeelake", "skylake", True),
        ("kabylake", "coffeelake", True),
        ("coffeelake", "broadwell", False),
        ("skylake_avx512", "coffeelake", False),
        ("coffeelake", "cascadelake", True),
    ],
)
def test_microarch_default_aliases(required: str, machine: str, expected: bool) -> None:
    """Client Skylake-derived cores that archspec does not name run what is built for skylake."""
    assert "coffeelake" not in TARGETS
    assert MicroarchMatcher().fit("cpu", required, {"cpu": (machine,)}).ok is expected


def test_microarch_configured_alias() -> None:
    matcher = MicroarchMatcher({"myhost": "haswell"})
    assert matcher.fit("cpu", "ivybridge", {"cpu": ("myhost",)}).ok
    assert not matcher.fit("cpu", "skylake", {"cpu": ("myhost",)}).ok
    assert matcher.fit("cpu", "skylake", {"cpu": ("coffeelake",)}).ok  # defaults still apply
    assert not MicroarchMatcher().fit("cpu", "ivybridge", {"cpu": ("myhost",)}).ok


@pytest.mark.parametrize(
    ("required", "machine", "expected"),
    [
        ("mycpu", "mycpu", True),
        ("mycpu", "othercpu", False),
        ("mycpu", "haswell", False),
        ("haswell", "mycpu", False),
        ("x86_64", "mycpu", False),
        ("Haswell", "haswell", False),
    ],
)
def test_microarch_unknown_names_only_match_exactly(
    required: str, machine: str, expected: bool
) -> None:
    assert MicroarchMatcher().fit("cpu", required, {"cpu": (machine,)}).ok is expected


def test_microarch_unknown_required_is_explained() -> None:
    fit = MicroarchMatcher().fit("cpu", "mycpu", {"cpu": ("haswell",)})
    assert "not a known microarchitecture" in fit.reason


def test_microarch_best_of_several_machine_values() -> None:
    matcher = MicroarchMatcher()
    assert matcher.fit("cpu", "zen2", {"cpu": ("haswell", "zen2")}).ok
    assert matcher.fit("cpu", "zen2", {"cpu": ("haswell", "zen2")}).distance == 0
    # One declared cpu builds on the other: the machine runs the more derived one's code, and
    # distances are measured from it, so the skylake build is the closer of the two.
    machine = {"cpu": ("haswell", "skylake")}
    haswell, skylake = (matcher.fit("cpu", cpu, machine) for cpu in ("haswell", "skylake"))
    assert haswell.ok and skylake.ok
    alone = matcher.fit("cpu", "haswell", {"cpu": ("skylake",)})
    assert skylake.distance == 0 < haswell.distance == alone.distance


# --- cpuflag -----------------------------------------------------------------------------------


def has_flag(cpu: str, flag: str) -> bool:
    """archspec's own answer: is `flag` in the feature list of microarchitecture `cpu`."""
    return flag in TARGETS[cpu].features


@pytest.mark.parametrize(
    ("required", "machine", "expected"),
    [
        # the machine declares the flag itself
        ("avx512f", {"cpuflag": ("avx512f",)}, True),
        ("sve", {"cpuflag": ("sve", "sve2")}, True),
        ("myflag", {"cpuflag": ("myflag",), "cpu": ("haswell",)}, True),  # archspec lacks it
        # the machine's cpu has the flag in archspec's feature list
        ("avx512f", {"cpu": ("skylake_avx512",)}, has_flag("skylake_avx512", "avx512f")),
        ("avx2", {"cpu": ("haswell",)}, has_flag("haswell", "avx2")),
        ("avx512f", {"cpu": ("haswell",)}, has_flag("haswell", "avx512f")),
        ("avx2", {"cpu": ("zen2",)}, has_flag("zen2", "avx2")),
        ("sve", {"cpu": ("a64fx",)}, has_flag("a64fx", "sve")),
        ("avx2", {"cpu": ("x86_64_v3",)}, has_flag("x86_64_v3", "avx2")),
        # a built-in cpu alias: coffeelake is read as skylake
        ("avx2", {"cpu": ("coffeelake",)}, has_flag("skylake", "avx2")),
        ("avx512f", {"cpu": ("coffeelake",)}, has_flag("skylake", "avx512f")),
        # neither
        ("avx512f", {"cpuflag": ("avx2",), "cpu": ("haswell",)}, False),
        ("avx2", {"cpu": ("mycpu",)}, False),  # a cpu archspec does not know has no flags
        ("avx2", {}, False),
        ("avx2", {"cpuflag": ()}, False),
        # a malformed requirement fits nothing
        ("AVX2", {"cpuflag": ("AVX2",), "cpu": ("haswell",)}, False),
        ("", {"cpuflag": ("",)}, False),
    ],
)
def test_cpuflag_fits_a_declared_flag_or_one_the_machine_s_cpu_has(
    required: str, machine: dict[str, tuple[str, ...]], expected: bool
) -> None:
    fit = CpuFlagMatcher().fit("cpuflag", required, machine)
    assert fit.ok is expected
    if expected:
        assert fit.distance == 0
    else:
        assert f"cpuflag:{required}" in fit.reason


def test_cpuflag_premises_come_from_archspec() -> None:
    """The table above is only worth something if archspec says what its cases assume."""
    assert has_flag("skylake_avx512", "avx512f")
    assert has_flag("haswell", "avx2") and not has_flag("haswell", "avx512f")
    assert has_flag("zen2", "avx2")
    assert has_flag("skylake", "avx2") and not has_flag("skylake", "avx512f")
    assert "coffeelake" not in TARGETS and "mycpu" not in TARGETS


def test_cpuflag_reads_the_cpu_with_the_configured_cpu_aliases() -> None:
    registry = MatcherRegistry(aliases={"cpu": {"lab-cpu": "skylake_avx512"}})
    matcher = registry.for_key("cpuflag")
    assert isinstance(matcher, CpuFlagMatcher)
    assert matcher.fit("cpuflag", "avx512f", {"cpu": ("lab-cpu",)}).ok
    assert matcher.fit("cpuflag", "avx2", {"cpu": ("coffeelake",)}).ok  # defaults still apply
    assert not CpuFlagMatcher().fit("cpuflag", "avx512f", {"cpu": ("lab-cpu",)}).ok


@pytest.mark.parametrize(
    ("required", "machine", "says"),
    [
        ("avx512f", {"cpu": ("skylake_avx512",)}, "cpu skylake_avx512 has avx512f"),
        ("avx512f", {"cpuflag": ("avx512f",)}, "the machine declares cpuflag:avx512f"),
        (
            "avx512f",
            {"cpu": ("haswell",)},
            "cpuflag:avx512f: cpu haswell lacks avx512f, and the machine does not declare it",
        ),
        ("avx512f", {}, "cpuflag:avx512f: the machine declares neither it nor a cpu"),
        ("AVX2", {"cpu": ("haswell",)}, "cpuflag:AVX2 is not a cpu flag like avx512f"),
    ],
)
def test_cpuflag_says_which_rule_decided(
    required: str, machine: dict[str, tuple[str, ...]], says: str
) -> None:
    assert CpuFlagMatcher().fit("cpuflag", required, machine).reason == says


# --- cuda --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("required", "machine", "expected"),
    [
        ("5.2", "5.2", True),
        ("5.2", "5.3", True),
        ("5.3", "5.2", False),
        ("5.2", "6.0", False),
        ("6.0", "5.2", False),
        ("8.0", "8.6", True),
        ("8.0", "8.9", True),
        ("8.6", "8.0", False),
        ("8.6", "9.0", False),
        ("9.0", "9.0", True),
        ("9.0a", "9.0", True),
        ("9.0a", "9.1", False),
        ("9.0a", "10.0", False),
        ("10.0a", "10.0", True),
        ("10.0", "10.1", True),
        ("12.0", "12.1", True),
        ("1.0", "10.0", False),
    ],
)
def test_cuda_compatibility(required: str, machine: str, expected: bool) -> None:
    fit = CudaMatcher().fit("nvcap", required, {"nvcap": (machine,)})
    assert fit.ok is expected
    if not expected:
        assert f"nvcap:{machine}" in fit.reason


def test_cuda_nearer_capability_is_closer() -> None:
    matcher = CudaMatcher()
    machine = {"nvcap": ("8.6",)}
    exact = matcher.fit("nvcap", "8.6", machine)
    older = matcher.fit("nvcap", "8.0", machine)
    assert exact.ok and older.ok
    assert exact.distance == 0
    assert exact.distance < older.distance


def test_cuda_several_gpus() -> None:
    matcher = CudaMatcher()
    machine = {"nvcap": ("7.5", "8.6")}
    assert matcher.fit("nvcap", "7.0", machine).ok
    assert matcher.fit("nvcap", "8.0", machine).ok
    assert not matcher.fit("nvcap", "9.0", machine).ok
    assert matcher.fit("nvcap", "8.6", machine).distance == 0


@pytest.mark.parametrize("required", ["sm_86", "8", "8.6.1", "8.6b", "a.b", "86"])
def test_cuda_rejects_non_capabilities(required: str) -> None:
    fit = CudaMatcher().fit("nvcap", required, {"nvcap": ("8.6",)})
    assert not fit.ok
    assert "compute capability" in fit.reason


def test_cuda_ignores_unreadable_machine_values() -> None:
    fit = CudaMatcher().fit("nvcap", "8.6", {"nvcap": ("ampere", "8.6")})
    assert fit.ok
    assert not CudaMatcher().fit("nvcap", "8.6", {"nvcap": ("ampere",)}).ok


# --- registry ----------------------------------------------------------------------------------


def test_builtin_matchers_are_named_by_their_name() -> None:
    assert set(BUILTIN_MATCHERS) == {"exact", "microarch", "cpuflag", "cuda", "at-least"}
    for name, cls in BUILTIN_MATCHERS.items():
        assert cls.name == name


def test_default_key_matchers() -> None:
    assert dict(DEFAULT_KEY_MATCHERS) == {
        "cpu": "microarch",
        "cpuflag": "cpuflag",
        "nvcap": "cuda",
        "nvptx": "cuda",
        "driver": "at-least",
        "cuda": "at-least",
    }


def test_an_unknown_matcher_names_the_ones_there_are() -> None:
    with pytest.raises(UnknownMatcher) as info:
        MatcherRegistry({"cpu": "fuzzy"})
    assert str(info.value) == (
        "unknown matcher 'fuzzy' for key 'cpu': "
        "use one of at-least, cpuflag, cuda, exact, microarch"
    )


def test_registry_builds_each_key_its_matcher_with_its_aliases() -> None:
    registry = MatcherRegistry({"driver": "at-least"}, {"cpu": {"myhost": "haswell"}})
    assert isinstance(registry.for_key("cpu"), MicroarchMatcher)
    assert isinstance(registry.for_key("driver"), AtLeastMatcher)
    assert isinstance(registry.for_key("gpu"), ExactMatcher)  # no matcher: exact
    assert registry.for_key("cpu").canonical("myhost") == "haswell"
    assert registry.for_key("cpu").canonical("coffeelake") == "skylake"  # built-in aliases kept
    assert registry.for_key("driver").canonical("myhost") == "myhost"  # aliases are per key


def test_machines_declare_capabilities_not_ptx() -> None:
    builtin = {"cpu", "cpuflag", "nvcap", "driver", "cuda"}
    assert MatcherRegistry().machine_keys() == builtin
    assert MatcherRegistry({"ht": "exact"}).machine_keys() == builtin | {"ht"}


# --- values a machine may declare ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("cpu", "zen3", None),
        ("cpu", "coffeelake", None),  # a built-in alias
        ("cpu", "myhost", None),  # a configured alias
        ("cpu", "zen99", "'zen99' is not a microarchitecture archspec knows"),
        ("cpuflag", "avx512f", None),
        ("cpuflag", "sse4_1", None),
        ("cpuflag", "myflag2", None),  # well formed, though archspec lists no such flag
        ("cpuflag", "vec", None),  # a configured alias
        ("cpuflag", "AVX2", "a cpu flag is lowercase letters, digits and _"),
        ("cpuflag", "avx-512", "a cpu flag is lowercase letters, digits and _"),
        ("cpuflag", "", "a cpu flag is lowercase letters, digits and _"),
        ("cpuflag", "a" * 65, "a cpu flag is lowercase letters, digits and _"),
        ("cpuflag", "avx2\n", "a cpu flag is lowercase letters, digits and _"),
        ("nvcap", "8.6", None),
        ("nvcap", "a100", None),  # a configured alias
        ("nvcap", "9.0a", "a machine's compute capability is MAJOR.MINOR, e.g. 8.6"),
        ("nvcap", "eight", "a machine's compute capability is MAJOR.MINOR, e.g. 8.6"),
        ("driver", "535.104", None),
        ("driver", "535", None),
        ("driver", "latest", "expected a dotted version, e.g. 535.104"),
        ("driver", "535.", "expected a dotted version, e.g. 535.104"),
        ("gpu", "anything-at-all", None),
    ],
)
def test_each_matcher_checks_the_values_a_machine_declares(
    key: str, value: str, problem: str | None
) -> None:
    registry = MatcherRegistry(
        {"driver": "at-least"},
        {"cpu": {"myhost": "haswell"}, "nvcap": {"a100": "8.0"}, "cpuflag": {"vec": "avx2"}},
    )
    found = registry.check(key, value)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert found.startswith(problem)

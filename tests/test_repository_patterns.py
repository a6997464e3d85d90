"""`registry/repository` patterns: `*` within one path component, `**` across components."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metahub.oci.repository_patterns import (
    InvalidPattern,
    RepositoryPatterns,
    check_patterns,
    compile_pattern,
)

CASES = [
    # pattern, name, matches
    ("docker.io/library/alpine", "docker.io/library/alpine", True),
    ("docker.io/library/alpine", "docker.io/library/alpine2", False),
    ("docker.io/library/*", "docker.io/library/alpine", True),
    ("docker.io/library/*", "docker.io/library/a/b", False),
    ("docker.io/library/*", "docker.io/library", False),
    ("docker.io/*/alpine", "docker.io/library/alpine", True),
    ("docker.io/*/alpine", "docker.io/a/b/alpine", False),
    ("docker.io/lib*", "docker.io/library", True),
    ("docker.io/*rary/alp*e", "docker.io/library/alpine", True),
    ("docker.io/*rary/alp*e", "docker.io/library/alpines", False),
    ("ghcr.io/acme/**", "ghcr.io/acme/app", True),
    ("ghcr.io/acme/**", "ghcr.io/acme/a/b/c", True),
    ("ghcr.io/acme/**", "ghcr.io/acme", False),
    ("ghcr.io/acme/**", "ghcr.io/acmeco/app", False),
    ("ghcr.io/acme/**", "docker.io/acme/app", False),
    ("ghcr.io/**/app", "ghcr.io/app", True),
    ("ghcr.io/**/app", "ghcr.io/a/b/app", True),
    ("ghcr.io/**/app", "ghcr.io/a/b/app2", False),
    ("**/base", "docker.io/base", True),
    ("**/base", "registry.lab:5000/x/base", True),
    ("**", "docker.io/library/alpine", True),
    ("*/library/*", "docker.io/library/alpine", True),
    ("*/library/*", "quay.io/library/alpine", True),
    ("registry.lab:5000/lab/*", "registry.lab:5000/lab/app", True),
    ("registry.lab:*/lab/*", "registry.lab:5000/lab/app", True),
    ("registry.lab/*", "registry.lab:5000/app", False),
    ("local/**", "local/hpc/app", True),
    # Dots are not wildcards.
    ("docker.io/a.b", "docker.io/axb", False),
]


@pytest.mark.parametrize(("pattern", "name", "matches"), CASES)
def test_a_pattern_matches_names(pattern: str, name: str, matches: bool) -> None:
    registry, _, repository = name.partition("/")
    assert RepositoryPatterns.of([pattern]).allows(registry, repository) is matches


def test_no_patterns_allow_everything() -> None:
    assert RepositoryPatterns.of([]).allows("docker.io", "anything/at/all")
    assert RepositoryPatterns.of([]).everything


def test_any_pattern_of_several_allows() -> None:
    patterns = RepositoryPatterns.of(["docker.io/library/*", "ghcr.io/acme/**"])
    assert patterns.allows("docker.io", "library/alpine")
    assert patterns.allows("ghcr.io", "acme/x/y")
    assert not patterns.allows("ghcr.io", "other/x")


def test_registries_compare_case_insensitively() -> None:
    assert RepositoryPatterns.of(["docker.io/**"]).allows("Docker.IO", "library/alpine")


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        ("", "empty repository pattern"),
        ("docker.io", "names no repository"),
        ("docker.io//x", "empty path component"),
        ("docker.io/x/", "empty path component"),
        ("/x", "empty path component"),
        ("docker.io/Library/*", "may hold only lower-case"),
        ("docker.io/a b", "may hold only lower-case"),
        ("docker.io/a?", "may hold only lower-case"),
        ("docker.io/[ab]", "may hold only lower-case"),
        ("docker.io/a**", "must be a whole path component"),
        ("docker.io/***", "must be a whole path component"),
    ],
)
def test_bad_patterns_are_refused_naming_them(pattern: str, says: str) -> None:
    with pytest.raises(InvalidPattern, match=says) as raised:
        compile_pattern(pattern)
    if pattern:
        assert repr(pattern) in str(raised.value)


def test_check_patterns_names_the_bad_one() -> None:
    with pytest.raises(InvalidPattern, match=r"'ghcr\.io'"):
        check_patterns(["docker.io/**", "ghcr.io"])


# -- properties -----------------------------------------------------------------------------

COMPONENT = st.from_regex(r"[a-z0-9]([a-z0-9._-]{0,6}[a-z0-9])?", fullmatch=True)
REGISTRY = st.one_of(
    st.sampled_from(["docker.io", "ghcr.io", "local", "registry.lab:5000", "127.0.0.1:5000"]),
    COMPONENT,
)
REPOSITORY = st.lists(COMPONENT, min_size=1, max_size=5).map("/".join)


@given(REGISTRY, REPOSITORY)
def test_a_name_matches_itself_as_a_pattern(registry: str, repository: str) -> None:
    assert RepositoryPatterns.of([f"{registry}/{repository}"]).allows(registry, repository)


@given(REGISTRY, REPOSITORY)
def test_globstar_alone_and_under_a_registry_match_everything_there(
    registry: str, repository: str
) -> None:
    assert RepositoryPatterns.of(["**"]).allows(registry, repository)
    assert RepositoryPatterns.of([f"{registry}/**"]).allows(registry, repository)


@given(REGISTRY, REPOSITORY, REPOSITORY)
def test_a_star_never_crosses_a_slash(registry: str, repository: str, deeper: str) -> None:
    """`reg/*` matches exactly the one-component repositories; `reg/**` every one."""
    star = RepositoryPatterns.of([f"{registry}/*"])
    assert star.allows(registry, repository) is ("/" not in repository)
    assert not star.allows(registry, f"{repository}/{deeper}")


@given(REGISTRY, REPOSITORY, REPOSITORY)
def test_a_prefix_with_globstar_matches_exactly_what_lies_under_it(
    registry: str, prefix: str, name: str
) -> None:
    patterns = RepositoryPatterns.of([f"{registry}/{prefix}/**"])
    assert patterns.allows(registry, f"{prefix}/{name}")
    assert patterns.allows(registry, name) is name.startswith(f"{prefix}/")


@given(REGISTRY, REGISTRY, REPOSITORY)
def test_a_registry_pattern_never_matches_another_registry(
    registry: str, other: str, repository: str
) -> None:
    allowed = RepositoryPatterns.of([f"{registry}/**"]).allows(other, repository)
    assert allowed is (registry == other)


@given(REGISTRY, REPOSITORY)
def test_every_component_replaced_by_a_star_still_matches(registry: str, repository: str) -> None:
    stars = "/".join("*" for _ in repository.split("/"))
    assert RepositoryPatterns.of([f"*/{stars}"]).allows(registry, repository)

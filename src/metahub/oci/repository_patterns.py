"""Patterns over `registry/repository` names: which repositories a machine type may pull.

A pattern is `/`-separated components, the first naming the registry as image references spell
it (`docker.io`, `ghcr.io`, `registry.lab:5000`, `local`). In a component `*` matches any run of
characters within that component; a component that is exactly `**` matches any number of whole
components, so `ghcr.io/acme/**` is everything under `ghcr.io/acme/` and `**/base` is a repository
named `base` under any registry and path (gitignore's rules for `**`). `**` at the end matches at
least one component: `docker.io/**` is every repository of Docker Hub, not the registry itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

# What a component may hold: the characters of repository names and registry hosts (`:` for a
# port), and `*`. Names are lower case in the distribution spec; hosts compare case-insensitively.
_COMPONENT_RE = re.compile(r"[a-z0-9._:*-]+\Z")
GLOBSTAR = "**"


class InvalidPattern(ValueError):
    """A pattern that cannot be used; the message names it and says why."""


def _component_regex(component: str) -> str:
    return "[^/]*".join(re.escape(part) for part in component.split("*"))


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The regular expression a pattern stands for; raises InvalidPattern naming it."""
    if not pattern:
        raise InvalidPattern(
            "empty repository pattern; e.g. docker.io/library/* or ghcr.io/acme/**"
        )
    components = pattern.split("/")
    for component in components:
        if not component:
            raise InvalidPattern(f"repository pattern {pattern!r} has an empty path component")
        if not _COMPONENT_RE.match(component):
            raise InvalidPattern(
                f"repository pattern {pattern!r}: {component!r} may hold only lower-case "
                "letters, digits, '.', '_', '-', ':' and '*'"
            )
        if GLOBSTAR in component and component != GLOBSTAR:
            raise InvalidPattern(
                f"repository pattern {pattern!r}: '**' must be a whole path component"
            )
    if len(components) == 1 and components[0] != GLOBSTAR:
        raise InvalidPattern(
            f"repository pattern {pattern!r} names no repository: patterns are "
            f"registry/repository, e.g. {pattern}/** for every repository there"
        )
    regex = ""
    joined = False  # whether the text so far ends where the next component begins
    last = len(components) - 1
    for position, component in enumerate(components):
        separator = "" if position == 0 or joined else "/"
        if component != GLOBSTAR:
            regex += separator + _component_regex(component)
            joined = False
        elif position == last:
            regex += separator + "[^/]+(?:/[^/]+)*"
        else:
            regex += separator + "(?:[^/]+/)*"
            joined = True
    return re.compile(regex + r"\Z")


@dataclass(frozen=True, slots=True)
class RepositoryPatterns:
    """A machine type's patterns; none at all means every repository."""

    patterns: tuple[str, ...] = ()
    _compiled: tuple[re.Pattern[str], ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def of(cls, patterns: Iterable[str]) -> RepositoryPatterns:
        texts = tuple(patterns)
        return cls(texts, tuple(compile_pattern(p) for p in texts))

    @property
    def everything(self) -> bool:
        return not self.patterns

    def allows(self, registry: str, repository: str) -> bool:
        if not self.patterns:
            return True
        name = f"{registry.lower()}/{repository}"
        return any(regex.match(name) for regex in self._compiled)


EVERYTHING = RepositoryPatterns()


def check_patterns(patterns: Iterable[str]) -> tuple[str, ...]:
    """The patterns, each validated (InvalidPattern names the first bad one)."""
    texts = tuple(patterns)
    for text in texts:
        compile_pattern(text)
    return texts

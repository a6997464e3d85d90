"""Platforms: what runtimes match index entries on, and the `os/architecture[/variant]` text."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PlatformKey:
    """What runtimes match an index entry on; one filtered entry is kept per key.

    Its hash is made once: selection looks every entry's platform up in dictionaries on every
    call, and the generated `__hash__` hashed the four fields anew each time (a tenth of a
    1,000-entry selection).
    """

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields = (self.os, self.architecture, self.variant, self.os_version)
        object.__setattr__(self, "_hash", hash(fields))

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        if self.variant:
            text += f"/{self.variant}"
        if self.os_version:
            text += f" ({self.os_version})"
        return text


DEFAULT_PLATFORM = PlatformKey("linux", "amd64")


class InvalidPlatform(ValueError):
    pass


def parse_platform(text: str) -> PlatformKey:
    """`os/architecture[/variant]`, as docker's `--platform` takes it."""
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise InvalidPlatform(
            f"invalid platform {text!r}: expected os/architecture[/variant], e.g. linux/amd64/v3"
        )
    return normalize_platform(PlatformKey(*parts))


def normalize_platform(platform: PlatformKey) -> PlatformKey:
    """arm64 without a variant means v8, as containerd reads it."""
    if platform.architecture == "arm64" and platform.variant == "v8":
        return PlatformKey(platform.os, platform.architecture, "", platform.os_version)
    return platform

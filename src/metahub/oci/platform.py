"""Platforms: what runtimes match index entries on, and the `os/architecture[/variant]` text."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PlatformKey:
    """What runtimes match an index entry on; one filtered entry is kept per key."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""

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

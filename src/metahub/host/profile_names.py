"""A host's profile login from its features: `hpc` and `cpu:zen3` -> `hpc/cpu=zen3`.

Kept apart from `login.py` (which brings aiohttp) so that the kubelet credential provider,
started for every image kubelet has no cached login for, imports only what it needs.
"""

from __future__ import annotations

from collections.abc import Iterable

from metahub.host.errors import HostError


class LoginError(HostError):
    """Why the host could not be logged in; shown to the user as is."""


def profile_login(account: str, features: Iterable[str], skip: Iterable[str] = ()) -> str:
    """`hpc` and `cpu:zen3`, `nvcap:8.6` -> `hpc/cpu=zen3,nvcap=8.6`, in the server's order."""
    skipped = set(skip)
    pairs = set()
    for feature in features:
        key, _, value = feature.partition(":")
        if key not in skipped:
            pairs.add(f"{key}={value}")
    if not pairs:
        raise LoginError("no features left for the profile login")
    return f"{account}/{','.join(sorted(pairs))}"


def without_keys(login: str, keys: Iterable[str]) -> str:
    account, _, spec = login.partition("/")
    dropped = set(keys)
    pairs = [pair for pair in spec.split(",") if pair.partition("=")[0] not in dropped]
    if not pairs:
        raise LoginError("no features left for the profile login")
    return f"{account}/{','.join(pairs)}"

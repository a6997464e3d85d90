"""Profile logins: `<account>/<key>=<value>,...` makes a machine type on the fly.

A host that knows its own features logs in as, say, `hpc/cpu=zen3,nvcap=8.6` with the password
of the account `hpc` (one declared in `accounts:` with `profile_logins: true`). The features are
validated (only keys this server matches on, values the key's matcher understands), sorted into
a canonical name, and made into a MachineProfile named after it. That name is what a token's
`mt` claim carries, so every later request rebuilds the same profile from the token alone.

`platform=<os>/<arch>[/<variant>]` is not a feature: it becomes the profile's platforms, every
platform such a host runs (`linux/amd64/v3` runs amd64 entries without a variant and v1 to v3).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from metahub.auth.passwords import Account, CredentialChecker
from metahub.config import AccountConfig, FeaturesConfig
from metahub.features.matchers import MatcherRegistry
from metahub.features.model import Feature, InvalidFeature
from metahub.features.names import MAX_LENGTH
from metahub.features.selection import MachineProfile
from metahub.oci.platform import InvalidPlatform, PlatformKey, normalize_platform, parse_platform

PLATFORM_KEY = "platform"
_EXAMPLE = "e.g. hpc/cpu=zen3,nvcap=8.6"


class ProfileLoginError(ValueError):
    """A profile login that cannot be served; the message says why and is safe to show."""

    def __init__(
        self, message: str, *, unknown_keys: Iterable[str] = (), known_keys: Iterable[str] = ()
    ) -> None:
        super().__init__(message)
        self.unknown_keys = sorted(unknown_keys)
        self.known_keys = sorted(known_keys)

    @property
    def detail(self) -> dict[str, Any] | None:
        if not self.unknown_keys:
            return None
        return {"unknown_keys": self.unknown_keys, "known_keys": self.known_keys}


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    """A parsed profile login: the account, its features and its platform, canonical."""

    account: str
    features: tuple[Feature, ...]  # sorted, distinct
    platform: PlatformKey | None

    @property
    def name(self) -> str:
        pairs = [f"{f.key}={f.value}" for f in self.features]
        if self.platform is not None:
            pairs.append(f"{PLATFORM_KEY}={platform_text(self.platform)}")
        return f"{self.account}/{','.join(sorted(pairs))}"


def is_profile_login(login: str) -> bool:
    return "/" in login


def platform_text(platform: PlatformKey) -> str:
    return "/".join(p for p in (platform.os, platform.architecture, platform.variant) if p)


def parse_profile_login(login: str) -> ProfileSpec:
    """`hpc/nvcap=8.6,cpu=zen3` -> account `hpc`, features cpu:zen3 and nvcap:8.6."""
    account, sep, spec = login.partition("/")
    if not sep or not account:
        raise ProfileLoginError(f"invalid profile login {login!r}: expected ACCOUNT/KEY=VALUE,...")
    features: set[Feature] = set()
    platform: PlatformKey | None = None
    for pair in spec.split(","):
        key, eq, value = pair.partition("=")
        if not eq or not key or not value:
            raise ProfileLoginError(
                f"invalid profile login {login!r}: {pair!r} is not key=value; "
                f"use comma-separated key=value pairs, {_EXAMPLE}"
            )
        if key == PLATFORM_KEY:
            try:
                parsed = parse_platform(value)
            except InvalidPlatform as exc:
                raise ProfileLoginError(f"invalid profile login {login!r}: {exc}") from exc
            if platform is not None and parsed != platform:
                raise ProfileLoginError(
                    f"invalid profile login {login!r}: more than one {PLATFORM_KEY}"
                )
            platform = parsed
            continue
        try:
            features.add(Feature.parse(f"{key}:{value}"))
        except InvalidFeature as exc:
            raise ProfileLoginError(
                f"invalid profile login {login!r}: {key}={value} is not a valid feature"
            ) from exc
    return ProfileSpec(account, tuple(sorted(features)), platform)


# A level is a number of one or two digits: a longer one (`v99999999`) is no level any CPU has,
# and would spell out millions of platforms. Such a variant is matched as it is written.
_LEVEL_RE = re.compile(r"v([0-9]{1,2})")


def platforms_run_by(platform: PlatformKey) -> tuple[PlatformKey, ...]:
    """Every platform a host of `platform` runs natively, the runtime's default one first."""
    platform = normalize_platform(platform)
    os_, arch, variant = platform.os, platform.architecture, platform.variant
    level = _LEVEL_RE.fullmatch(variant)
    if arch == "amd64" and (level or not variant):
        top = int(level.group(1)) if level else 1
        return (
            PlatformKey(os_, arch),
            *(PlatformKey(os_, arch, f"v{n}") for n in range(1, top + 1)),
        )
    if arch == "arm" and level:
        return tuple(PlatformKey(os_, arch, f"v{n}") for n in range(int(level.group(1)), 4, -1))
    return (platform,)


class ProfileLogins:
    """Authenticates profile logins and rebuilds their profiles from a token's `mt` claim."""

    def __init__(
        self,
        accounts: Iterable[AccountConfig],
        features: FeaturesConfig | None = None,
        machine_types: Callable[[], Mapping[str, MachineProfile]] = dict,
        *,
        cache_size: int = 1024,
    ) -> None:
        self._accounts = {account.login: account for account in accounts}
        self._checker = CredentialChecker(
            Account(a.login, a.login, a.password, a.password_hash) for a in self._accounts.values()
        )
        features = features or FeaturesConfig()
        self._matchers = MatcherRegistry(features.matchers, features.aliases)
        self._machine_types = machine_types
        self._cache: OrderedDict[str, MachineProfile] = OrderedDict()
        self._cache_size = cache_size

    @property
    def enabled(self) -> bool:
        return any(account.profile_logins for account in self._accounts.values())

    def known_keys(self) -> set[str]:
        """Keys a profile login may use: those with a matcher, or used by a machine type."""
        keys = self._matchers.machine_keys()
        for profile in self._machine_types().values():
            keys.update(feature.key for feature in profile.features)
        return keys | {PLATFORM_KEY}

    async def authenticate(self, login: str, password: str) -> MachineProfile | None:
        """The profile for this login, None for a wrong password or an unknown account.

        Raises ProfileLoginError, with a message safe to show, for a login whose password is
        right but that cannot be served: the account takes no profile logins, or a feature is
        malformed or unknown here.
        """
        account = login.partition("/")[0]
        if await self._checker.check_account(account, password) is None:
            return None
        return self.profile(login)

    def profile(self, login: str) -> MachineProfile:
        """The profile a (verified) profile login or a token's machine type names."""
        cached = self._cache.get(login)
        if cached is not None:
            self._cache.move_to_end(login)
            return cached
        profile = self._build(login)
        self._cache[login] = profile
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return profile

    def _build(self, login: str) -> MachineProfile:
        spec = parse_profile_login(login)
        account = self._accounts.get(spec.account)
        if account is None:
            raise ProfileLoginError(f"account {spec.account!r} does not exist")
        if not account.profile_logins:
            raise ProfileLoginError(f"account {spec.account!r} does not take profile logins")
        self._validate(login, spec)
        name = spec.name
        if len(name) > MAX_LENGTH:  # the filtered-digest store records the name
            raise ProfileLoginError(
                f"profile login is {len(name)} characters long; at most {MAX_LENGTH}"
            )
        platforms = self._platforms(account, spec)
        return MachineProfile.of(
            name,
            [str(f) for f in spec.features],
            mode=account.mode,
            platforms=[platform_text(p) for p in platforms],
            repositories=account.repositories,
        )

    def _validate(self, login: str, spec: ProfileSpec) -> None:
        known = self.known_keys()
        unknown = sorted({f.key for f in spec.features} - known)
        if unknown:
            raise ProfileLoginError(
                f"profile login {login!r}: unknown feature key{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(unknown)}; this server knows {', '.join(sorted(known))}",
                unknown_keys=unknown,
                known_keys=known,
            )
        for feature in spec.features:
            problem = self._matchers.check(feature.key, feature.value)
            if problem:
                raise ProfileLoginError(
                    f"profile login {login!r}: {feature.key}={feature.value}: {problem}"
                )

    @staticmethod
    def _platforms(account: AccountConfig, spec: ProfileSpec) -> tuple[PlatformKey, ...]:
        declared = tuple(parse_platform(p) for p in account.platforms)
        if spec.platform is None:
            return declared
        runs = platforms_run_by(spec.platform)
        if not declared:
            return runs
        allowed = {(p.os, p.architecture, p.variant) for p in declared}
        kept = tuple(p for p in runs if (p.os, p.architecture, p.variant) in allowed)
        if not kept:
            served = ", ".join(platform_text(p) for p in declared)
            raise ProfileLoginError(
                f"account {spec.account!r} serves {served}, none of which a "
                f"{platform_text(spec.platform)} host runs"
            )
        return kept

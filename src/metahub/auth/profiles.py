"""Which MachineProfile a request is served for: a machine type, or a profile login's.

A principal names its machine type (a token's `mt` claim, or the account behind a password);
this turns that name into the profile selection uses, before anything is served. Machine types
come from the directory as last loaded; a profile login's profile is rebuilt from its name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from metahub import errors
from metahub.auth.profile_logins import ProfileLoginError, ProfileLogins, is_profile_login
from metahub.auth.tokens import Principal
from metahub.features.selection import MachineProfile


class MachineProfiles:
    """Machine types by name (read through `machine_types`, each time), and profile logins."""

    def __init__(
        self,
        machine_types: Callable[[], Mapping[str, MachineProfile]],
        profile_logins: ProfileLogins | None = None,
    ) -> None:
        self._machine_types = machine_types
        self._profile_logins = profile_logins

    def names(self) -> list[str]:
        """The machine types, sorted (profile logins are made on the fly, so not listed)."""
        return sorted(self._machine_types())

    def for_principal(self, principal: Principal) -> MachineProfile | None:
        """The profile a request is served for; None for an unfiltered (anonymous) one.

        A machine type deleted, or a profile login no longer valid, since the token was issued
        is a 401: the client logs in again and is told why.
        """
        if principal.machine_type is None:
            return None
        try:
            profile = self._lookup(principal.machine_type)
        except ProfileLoginError as exc:
            raise errors.Unauthorized(f"{exc}; log in again") from exc
        if profile is None:
            raise errors.Unauthorized(
                f"machine type {principal.machine_type!r} no longer exists; log in again"
            )
        return profile

    def named(self, name: str) -> MachineProfile:
        """A machine type, or a profile login's (`hpc/cpu=zen3`), by name: for explaining."""
        try:
            profile = self._lookup(name)
        except ProfileLoginError as exc:
            raise errors.NotFound(str(exc), detail=exc.detail or {"machine_type": name}) from exc
        if profile is None:
            known = ", ".join(self.names()) or "none configured"
            raise errors.NotFound(
                f"machine type {name!r} does not exist (known: {known})",
                detail={"machine_type": name},
            )
        return profile

    def _lookup(self, name: str) -> MachineProfile | None:
        profile = self._machine_types().get(name)
        if profile is None and self._profile_logins is not None and is_profile_login(name):
            # A profile login's machine type is rebuilt from its name (cached).
            return self._profile_logins.profile(name)
        return profile

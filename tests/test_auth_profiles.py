"""MachineProfiles: a principal or a name to the MachineProfile it is served for, or a 401/404."""

from __future__ import annotations

import pytest

from metahub import errors
from metahub.auth.profile_logins import ProfileLogins
from metahub.auth.profiles import MachineProfiles
from metahub.auth.tokens import Principal
from metahub.config import AccountConfig
from metahub.features.selection import MachineProfile

SKY = MachineProfile.of("sky", ["cpu:skylake"])
ZEN = MachineProfile.of("zen", ["cpu:zen3"])


@pytest.fixture
def machine_types() -> dict[str, MachineProfile]:
    return {"sky": SKY, "zen": ZEN}


@pytest.fixture
def profiles(machine_types: dict[str, MachineProfile]) -> MachineProfiles:
    logins = ProfileLogins(
        [AccountConfig(login="hpc", password="hpc-secret", profile_logins=True)],
        machine_types=lambda: machine_types,
    )
    return MachineProfiles(lambda: machine_types, logins)


def test_a_principal_is_served_for_its_machine_type(profiles: MachineProfiles) -> None:
    assert profiles.for_principal(Principal("sky-1", "sky")) is SKY
    assert profiles.for_principal(Principal("anonymous", None)) is None


def test_a_profile_login_is_rebuilt_from_its_name(profiles: MachineProfiles) -> None:
    profile = profiles.for_principal(Principal("hpc/cpu=zen3", "hpc/cpu=zen3"))
    assert profile is not None
    assert profile.name == "hpc/cpu=zen3"
    assert [str(f) for f in profile.features] == ["cpu:zen3"]
    assert profiles.named("hpc/cpu=zen3") == profile


def test_machine_types_are_read_as_they_are_now(
    profiles: MachineProfiles, machine_types: dict[str, MachineProfile]
) -> None:
    """The directory replaces its mapping on every load: the newest one is what counts."""
    machine_types["new"] = MachineProfile.of("new", [])
    assert profiles.named("new").name == "new"
    assert profiles.names() == ["new", "sky", "zen"]


def test_a_deleted_machine_type_is_a_401(
    profiles: MachineProfiles, machine_types: dict[str, MachineProfile]
) -> None:
    del machine_types["sky"]
    with pytest.raises(errors.Unauthorized, match="'sky' no longer exists; log in again"):
        profiles.for_principal(Principal("sky-1", "sky"))


def test_a_profile_login_no_longer_valid_is_a_401(profiles: MachineProfiles) -> None:
    with pytest.raises(errors.Unauthorized, match=r"unknown feature key .*; log in again$"):
        profiles.for_principal(Principal("hpc/colour=red", "hpc/colour=red"))


def test_an_unknown_name_is_a_404_listing_the_known_ones(profiles: MachineProfiles) -> None:
    with pytest.raises(errors.NotFound) as info:
        profiles.named("gpu")
    assert info.value.message == "machine type 'gpu' does not exist (known: sky, zen)"
    assert info.value.detail == {"machine_type": "gpu"}


def test_a_bad_profile_login_name_is_a_404_that_says_why(profiles: MachineProfiles) -> None:
    with pytest.raises(errors.NotFound) as info:
        profiles.named("hpc/colour=red")
    assert "unknown feature key colour" in info.value.message
    assert info.value.detail["unknown_keys"] == ["colour"]

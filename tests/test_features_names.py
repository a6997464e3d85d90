"""Names and logins: one rule for the config file and the management service."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from metahub.features.names import (
    MAX_LENGTH,
    InvalidName,
    check_admin_login,
    check_login,
    check_name,
)

Check = Callable[[str], str]


@pytest.mark.parametrize(
    ("check", "text"),
    [
        (check_name, "gpu"),
        (check_name, "a100.sxm_4-80g"),
        (check_name, "9" * MAX_LENGTH),
        (check_login, "rack7.node@lab"),
        (check_login, "user+tag/x=y"),
        (check_admin_login, "ops@example.org"),
    ],
)
def test_accepted(check: Check, text: str) -> None:
    assert check(text) == text


@pytest.mark.parametrize(
    ("check", "text"),
    [
        (check_name, ""),
        (check_name, "-gpu"),
        (check_name, "gpu box"),
        (check_name, "gpu@lab"),
        (check_name, "gpu\n"),
        (check_name, "g" * (MAX_LENGTH + 1)),
        (check_login, "has:colon"),
        (check_login, "has space"),
        (check_login, "a#b"),
        (check_login, "l" * (MAX_LENGTH + 1)),
        (check_admin_login, "has/slash"),
        (check_admin_login, ".dot-first"),
    ],
)
def test_refused(check: Check, text: str) -> None:
    with pytest.raises(InvalidName, match="use letters, digits"):
        check(text)

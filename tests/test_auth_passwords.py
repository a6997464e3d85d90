"""Machine-type credentials: plaintext and argon2, with a cache in front of argon2."""

from __future__ import annotations

import asyncio
from typing import Literal

import pytest
from argon2 import PasswordHasher, extract_parameters

from metahub.auth.passwords import Account, CredentialChecker, PasswordVerifier, hash_password

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture(scope="module")
def argon2_hash() -> str:
    return FAST.hash("hashed-secret")


@pytest.fixture
def checker(argon2_hash: str) -> CredentialChecker:
    return CredentialChecker(
        [
            Account("plain", "cpu-box", password="plain-secret"),
            Account("hashed", "gpu-box", password_hash=argon2_hash),
        ],
        hasher=FAST,
    )


def count_verify(monkeypatch: pytest.MonkeyPatch, checker: CredentialChecker) -> list[tuple]:
    calls: list[tuple] = []
    real = checker._verify

    async def counting(login: str, password: str) -> str | None:
        calls.append((login, password))
        return await real(login, password)

    monkeypatch.setattr(checker, "_verify", counting)
    return calls


@pytest.fixture(scope="module")
def product_hash() -> str:
    """hash_password uses argon2's default cost (~0.5 s): call it once for the module."""
    return hash_password("correct horse")


def test_hash_password_is_an_argon2id_hash(product_hash: str) -> None:
    assert product_hash.startswith("$argon2id$")
    assert PasswordHasher().verify(product_hash, "correct horse")


@pytest.mark.parametrize(
    ("login", "password", "expected"),
    [
        ("plain", "plain-secret", "cpu-box"),
        ("hashed", "hashed-secret", "gpu-box"),
        ("plain", "wrong", None),
        ("plain", "", None),
        ("plain", "plain-secret ", None),
        ("plain", "Plain-secret", None),
        ("hashed", "wrong", None),
        ("hashed", "", None),
        ("hashed", "plain-secret", None),
        ("plain", "hashed-secret", None),
        ("nobody", "plain-secret", None),
        ("", "", None),
        ("PLAIN", "plain-secret", None),
    ],
)
async def test_check(
    checker: CredentialChecker, login: str, password: str, expected: str | None
) -> None:
    assert await checker.check(login, password) == expected


async def test_hash_made_by_hash_password_is_accepted(product_hash: str) -> None:
    checker = CredentialChecker([Account("a", "mt", password_hash=product_hash)])
    assert await checker.check("a", "correct horse") == "mt"
    assert await checker.check("a", "correct horse!") is None


async def test_malformed_hash_refuses_instead_of_raising() -> None:
    checker = CredentialChecker([Account("a", "mt", password_hash="$argon2id$garbage")])
    assert await checker.check("a", "anything") is None


async def test_non_ascii_passwords() -> None:
    checker = CredentialChecker(
        [
            Account("u", "mt", password="pässwörd"),
            Account("h", "mt2", password_hash=FAST.hash("ключ")),
        ],
        hasher=FAST,
    )
    assert await checker.check("u", "pässwörd") == "mt"
    assert await checker.check("u", "passwort") is None
    assert await checker.check("h", "ключ") == "mt2"


async def test_good_answer_is_cached(
    checker: CredentialChecker, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_verify(monkeypatch, checker)
    assert await checker.check("hashed", "hashed-secret") == "gpu-box"
    assert await checker.check("hashed", "hashed-secret") == "gpu-box"
    assert len(calls) == 1


async def test_bad_answer_is_cached(
    checker: CredentialChecker, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_verify(monkeypatch, checker)
    assert await checker.check("hashed", "nope") is None
    assert await checker.check("hashed", "nope") is None
    assert len(calls) == 1


async def test_cache_is_per_credential_pair(
    checker: CredentialChecker, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_verify(monkeypatch, checker)
    assert await checker.check("hashed", "hashed-secret") == "gpu-box"
    assert await checker.check("hashed", "wrong") is None
    assert await checker.check("plain", "plain-secret") == "cpu-box"
    assert len(calls) == 3
    assert await checker.check("hashed", "wrong") is None
    assert len(calls) == 3


async def test_cache_does_not_confuse_where_login_ends() -> None:
    checker = CredentialChecker(
        [Account("ab", "one", password="c"), Account("a", "two", password="bc")], hasher=FAST
    )
    assert await checker.check("ab", "c") == "one"
    assert await checker.check("a", "bc") == "two"
    assert await checker.check("a", "c") is None
    assert await checker.check("ab", "bc") is None


async def test_expired_entries_are_verified_again(monkeypatch: pytest.MonkeyPatch) -> None:
    checker = CredentialChecker([Account("a", "mt", password="p")], ttl=0, hasher=FAST)
    calls = count_verify(monkeypatch, checker)
    await checker.check("a", "p")
    await checker.check("a", "p")
    assert len(calls) == 2


async def test_cache_expiry_follows_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("metahub.auth.passwords.time.monotonic", lambda: now[0])
    checker = CredentialChecker([Account("a", "mt", password="p")], ttl=60, hasher=FAST)
    calls = count_verify(monkeypatch, checker)
    await checker.check("a", "p")
    now[0] += 59
    await checker.check("a", "p")
    assert len(calls) == 1
    now[0] += 2
    await checker.check("a", "p")
    assert len(calls) == 2


async def test_cache_is_bounded_least_recently_used(monkeypatch: pytest.MonkeyPatch) -> None:
    checker = CredentialChecker(
        [Account("a", "mt-a", password="p"), Account("b", "mt-b", password="p")],
        size=1,
        hasher=FAST,
    )
    calls = count_verify(monkeypatch, checker)
    await checker.check("a", "p")
    await checker.check("b", "p")  # evicts a
    await checker.check("a", "p")
    assert [login for login, _ in calls] == ["a", "b", "a"]
    assert len(checker._cache) == 1


# --- argon2 paid once per credential, and for unknown logins too -----------------------------


class CountingHasher(PasswordHasher):
    """The real argon2 hasher, counting the verifications it does."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verified: list[str] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verified.append(hash if isinstance(hash, str) else hash.decode())
        return super().verify(hash, password)


@pytest.fixture
def counting() -> CountingHasher:
    return CountingHasher()


@pytest.fixture
def counted_checker(counting: CountingHasher) -> CredentialChecker:
    return CredentialChecker(
        [
            Account("hashed", "gpu-box", password_hash=counting.hash("hashed-secret")),
            Account("plain", "cpu-box", password="plain-secret"),
        ],
        hasher=counting,
    )


async def test_concurrent_checks_of_one_cold_credential_share_one_verify(
    counted_checker: CredentialChecker, counting: CountingHasher
) -> None:
    verdicts = await asyncio.gather(
        *(counted_checker.check("hashed", "hashed-secret") for _ in range(50))
    )
    assert verdicts == ["gpu-box"] * 50
    assert len(counting.verified) == 1


async def test_a_wrong_password_checked_concurrently_is_refused_for_each(
    counted_checker: CredentialChecker, counting: CountingHasher
) -> None:
    verdicts = await asyncio.gather(
        *(counted_checker.check("hashed", "wrong") for _ in range(50)),
        counted_checker.check("hashed", "hashed-secret"),
    )
    assert verdicts == [None] * 50 + ["gpu-box"]
    assert len(counting.verified) == 2  # one per distinct pair


async def test_a_check_cancelled_while_waiting_does_not_fail_the_others(
    counted_checker: CredentialChecker, counting: CountingHasher
) -> None:
    first = asyncio.ensure_future(counted_checker.check("hashed", "hashed-secret"))
    second = asyncio.ensure_future(counted_checker.check("hashed", "hashed-secret"))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == "gpu-box"
    assert len(counting.verified) == 1


async def test_checks_in_flight_are_not_kept_by_password(
    counted_checker: CredentialChecker,
) -> None:
    started = asyncio.ensure_future(counted_checker.check("hashed", "hashed-secret"))
    await asyncio.sleep(0)
    assert "hashed-secret" not in repr(vars(counted_checker))
    assert await started == "gpu-box"


async def test_an_unknown_login_costs_an_argon2_verify(
    counted_checker: CredentialChecker, counting: CountingHasher
) -> None:
    """Else a wrong password for a known login (argon2) and an unknown login (a dict lookup)
    tell apart by their timing which logins exist."""
    assert await counted_checker.check("nobody", "hashed-secret") is None
    assert len(counting.verified) == 1
    # Against a hash of the same parameters as the real ones, so it costs the same.
    assert extract_parameters(counting.verified[0]) == extract_parameters(counting.hash("anything"))


async def test_a_plaintext_account_costs_an_argon2_verify_too(
    counted_checker: CredentialChecker, counting: CountingHasher
) -> None:
    assert await counted_checker.check("plain", "plain-secret") == "cpu-box"
    assert await counted_checker.check("plain", "wrong") is None
    assert len(counting.verified) == 2


async def test_the_dummy_hash_is_made_once(counting: CountingHasher) -> None:
    checker = CredentialChecker([], hasher=counting)
    for login in ("a", "b", "c"):
        assert await checker.check(login, "pw") is None
    assert len(set(counting.verified)) == 1


async def test_verify_password_without_a_hash_still_verifies(counting: CountingHasher) -> None:
    verifier = PasswordVerifier(counting)
    assert await verifier.verify(None, "anything") is False
    assert await verifier.verify(counting.hash("pw"), "pw") is True
    assert await verifier.verify(counting.hash("pw"), "nope") is False
    assert await verifier.verify("$argon2id$garbage", "pw") is False
    assert len(counting.verified) == 4

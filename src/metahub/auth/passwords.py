"""Checking passwords; verified answers are cached and shared because argon2 costs ~100 ms."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from metahub.cache.singleflight import SingleFlight

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


class PasswordVerifier:
    """argon2 verification that costs the same whether or not the login exists.

    Without a hash to check (an unknown login, or a plaintext password from the config) a dummy
    hash is verified instead, made once with the same parameters: else the time a refusal
    takes tells which logins exist.
    """

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or _hasher
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether `password` matches `password_hash`; always False without a hash."""
        try:
            await asyncio.to_thread(
                self._hasher.verify, password_hash or self._dummy_hash, password
            )
        except (VerificationError, InvalidHashError):
            return False
        return password_hash is not None


@functools.cache
def default_verifier() -> PasswordVerifier:
    """The verifier of `hash_password`'s hashes, its dummy hash made on first use (at start)."""
    return PasswordVerifier()


@dataclass(frozen=True, slots=True)
class Account:
    login: str
    machine_type: str
    password: str | None = None
    password_hash: str | None = None
    credential_id: str | None = None
    expires: datetime | None = None

    @property
    def active(self) -> bool:
        return self.expires is None or self.expires > datetime.now(UTC)

    @property
    def secret_tag(self) -> str:
        """Names the current secret without revealing it: tokens carry it, so rotating the
        password ends the tokens issued for the old one. Made from the salted argon2 hash only:
        a plain password from the config (which changes only with the config) is never hashed
        into a token, where a short unsalted hash of it could be guessed offline."""
        return hashlib.sha256((self.password_hash or "").encode()).hexdigest()[:16]


@runtime_checkable
class AccountSource(Protocol):
    def account(self, login: str) -> Account | None: ...


class StaticAccounts:
    def __init__(self, accounts: Iterable[Account]) -> None:
        self._accounts = {account.login: account for account in accounts}

    def account(self, login: str) -> Account | None:
        return self._accounts.get(login)


class CredentialChecker:
    """Maps `login:password` to the account (and so the machine type) it belongs to.

    Verdicts (good and bad) are cached by a hash of the pair for `ttl` seconds, so a client that
    sends Basic credentials on every request pays argon2 once, and concurrent checks of one
    pair share one verification. A cached "yes" is re-checked against the current account on
    every use, so a revoked, expired or rotated credential stops working as soon as the account
    source knows.
    """

    def __init__(
        self,
        accounts: Iterable[Account] | AccountSource,
        *,
        ttl: float = 60.0,
        size: int = 4096,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self._source: AccountSource = (
            StaticAccounts(accounts) if not isinstance(accounts, AccountSource) else accounts
        )
        self._ttl = ttl
        self._size = size
        self._cache: OrderedDict[bytes, tuple[Account | None, float, Account | None]] = (
            OrderedDict()
        )
        self._verifier = default_verifier() if hasher is None else PasswordVerifier(hasher)
        # Keyed by the pair's hash and the account it is checked against, never the password.
        self._in_flight: SingleFlight[tuple[bytes, Account | None], Account | None] = SingleFlight(
            "credential"
        )

    async def check(self, login: str, password: str) -> str | None:
        """The machine type these credentials belong to, or None."""
        account = await self.check_account(login, password)
        return account.machine_type if account is not None else None

    async def check_account(self, login: str, password: str) -> Account | None:
        key = hashlib.sha256(f"{login}\0{password}".encode()).digest()
        now = time.monotonic()
        current = self._source.account(login)
        cached = self._cache.get(key)
        # A verdict holds while the account it was made against is unchanged.
        if cached is not None and cached[1] > now and cached[2] == current:
            self._cache.move_to_end(key)
            verdict = cached[0]
        else:
            verdict = await self._in_flight.do(
                (key, current), lambda: self._verified(key, login, password, current)
            )
        return verdict if verdict is not None and verdict.active else None

    async def _verified(
        self, key: bytes, login: str, password: str, current: Account | None
    ) -> Account | None:
        """Verify once and cache the verdict, for every check of this pair waiting on it."""
        verdict = await self._verify(login, password)
        self._cache[key] = (verdict, time.monotonic() + self._ttl, current)
        self._cache.move_to_end(key)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return verdict

    async def _verify(self, login: str, password: str) -> Account | None:
        account = self._source.account(login)
        plaintext = account.password if account is not None else None
        # One argon2 verification whatever the account, so that every refusal takes as long:
        # an unknown login or a plaintext password from the config verifies the dummy hash.
        stored_hash = account.password_hash if account is not None and plaintext is None else None
        ok = await self._verifier.verify(stored_hash, password)
        if account is None:
            return None
        if plaintext is not None:
            ok = hmac.compare_digest(plaintext.encode(), password.encode())
        return account if ok else None

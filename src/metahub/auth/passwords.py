"""Checking machine-type passwords; verified answers are cached because argon2 costs ~100 ms."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


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
    sends Basic credentials on every request pays argon2 once. A cached "yes" is re-checked
    against the current account on every use, so a revoked, expired or rotated credential stops
    working as soon as the account source knows.
    """

    def __init__(
        self,
        accounts: Iterable[Account] | AccountSource,
        *,
        ttl: float = 60.0,
        size: int = 4096,
    ) -> None:
        self._source: AccountSource = (
            StaticAccounts(accounts) if not isinstance(accounts, AccountSource) else accounts
        )
        self._ttl = ttl
        self._size = size
        self._cache: OrderedDict[bytes, tuple[Account | None, float, Account | None]] = (
            OrderedDict()
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
            verdict = await self._verify(login, password)
            self._cache[key] = (verdict, now + self._ttl, current)
            self._cache.move_to_end(key)
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return verdict if verdict is not None and verdict.active else None

    async def _verify(self, login: str, password: str) -> Account | None:
        account = self._source.account(login)
        if account is None:
            return None
        if account.password is not None:
            ok = hmac.compare_digest(account.password.encode(), password.encode())
            return account if ok else None
        if account.password_hash is None:
            return None
        try:
            await asyncio.to_thread(_hasher.verify, account.password_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        return account

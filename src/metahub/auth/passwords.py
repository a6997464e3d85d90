"""Checking machine-type passwords; verified answers are cached because argon2 costs ~100 ms."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

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


class CredentialChecker:
    """Maps `login:password` to a machine type.

    Results (good and bad) are cached by a hash of the pair for `ttl` seconds, so a client that
    sends Basic credentials on every request pays argon2 once, and a revoked credential stops
    working within `ttl`.
    """

    def __init__(self, accounts: Iterable[Account], *, ttl: float = 60.0, size: int = 4096):
        self._accounts = {account.login: account for account in accounts}
        self._ttl = ttl
        self._size = size
        self._cache: OrderedDict[bytes, tuple[str | None, float]] = OrderedDict()

    async def check(self, login: str, password: str) -> str | None:
        """The machine type these credentials belong to, or None."""
        key = hashlib.sha256(f"{login}\0{password}".encode()).digest()
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            self._cache.move_to_end(key)
            return cached[0]
        result = await self._verify(login, password)
        self._cache[key] = (result, now + self._ttl)
        self._cache.move_to_end(key)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return result

    async def _verify(self, login: str, password: str) -> str | None:
        account = self._accounts.get(login)
        if account is None:
            return None
        if account.password is not None:
            ok = hmac.compare_digest(account.password.encode(), password.encode())
            return account.machine_type if ok else None
        assert account.password_hash is not None
        hashed = account.password_hash
        try:
            await asyncio.to_thread(_hasher.verify, hashed, password)
        except (VerificationError, InvalidHashError):
            return None
        return account.machine_type

"""The token signing key, kept in the database so every replica signs and verifies alike."""

from __future__ import annotations

import secrets

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from metahub.store.locks import hold_startup_lock
from metahub.store.schema import signing_keys

KEY_BYTES = 32


async def signing_key(engine: AsyncEngine) -> bytes:
    """The oldest key, made by whichever process starts first; every other one reads it.

    Under the start-up lock, so two processes starting at once cannot both find no key and each
    go on with its own.
    """
    query = select(signing_keys.c.key).order_by(signing_keys.c.id).limit(1)
    async with engine.begin() as connection:
        await hold_startup_lock(connection)
        row = (await connection.execute(query)).first()
        if row is not None:
            return bytes(row.key)
        key = secrets.token_bytes(KEY_BYTES)
        await connection.execute(insert(signing_keys).values(key=key))
    return key

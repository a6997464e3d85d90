"""The token signing key, kept in the database so every replica signs and verifies alike."""

from __future__ import annotations

import secrets

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from metahub.store.schema import signing_keys

KEY_BYTES = 32


async def signing_key(engine: AsyncEngine) -> bytes:
    """The oldest key; made on first start. Replicas racing to make one all read the oldest."""
    query = select(signing_keys.c.key).order_by(signing_keys.c.id).limit(1)
    async with engine.begin() as connection:
        row = (await connection.execute(query)).first()
        if row is None:
            await connection.execute(
                insert(signing_keys).values(key=secrets.token_bytes(KEY_BYTES))
            )
    async with engine.connect() as connection:
        row = (await connection.execute(query)).first()
    assert row is not None
    return bytes(row.key)

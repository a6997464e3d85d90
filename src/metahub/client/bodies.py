"""Reading a registry's response bodies: whole up to a limit, streamed, or its error words."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import aiohttp
import orjson

from metahub.client.errors import RegistryHttpError, Trouble

ERROR_BODY_LIMIT = 64 * 1024


async def read_limited(
    response: aiohttp.ClientResponse, limit: int, description: str, chunk_size: int
) -> bytes:
    """The whole body; more than `limit` bytes is an error, not a truncation."""
    data = bytearray()
    try:
        async for chunk in response.content.iter_chunked(chunk_size):
            data += chunk
            if len(data) > limit:
                raise RegistryHttpError(
                    Trouble.TOO_LARGE,
                    f"{description} sent more than {limit} bytes for {response.url.path}",
                    target=response.url.path,
                )
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _broken(description, exc) from exc
    return bytes(data)


async def read_prefix(response: aiohttp.ClientResponse, limit: int = ERROR_BODY_LIMIT) -> bytes:
    """At most `limit` bytes of the body, the rest unread: for error bodies, which are short."""
    data = bytearray()
    try:
        while len(data) < limit:
            chunk = await response.content.read(limit - len(data))
            if not chunk:
                break
            data += chunk
    except (aiohttp.ClientError, TimeoutError):
        pass  # what arrived is all there is to tell
    return bytes(data)


async def error_text(response: aiohttp.ClientResponse) -> str:
    """The registry's own words from an error body, or the status reason."""
    try:
        body = orjson.loads(await read_prefix(response))
        parts = [
            f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
            for error in body.get("errors", [])
            if isinstance(error, dict)
        ]
        if parts:
            return "; ".join(parts)
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return response.reason or str(response.status)


async def stream(
    response: aiohttp.ClientResponse,
    description: str,
    chunk_size: int,
    *,
    skip: int = 0,
    take: int | None = None,
) -> AsyncGenerator[bytes, None]:
    """The body in chunks, from byte `skip` on and `take` bytes long; released at the end."""
    try:
        async for chunk in response.content.iter_chunked(chunk_size):
            if skip:
                if len(chunk) <= skip:
                    skip -= len(chunk)
                    continue
                chunk, skip = chunk[skip:], 0
            if take is not None:
                if len(chunk) >= take:
                    yield chunk[:take]
                    return
                take -= len(chunk)
            yield chunk
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _broken(description, exc) from exc
    finally:
        response.release()


def _broken(description: str, exc: BaseException) -> RegistryHttpError:
    return RegistryHttpError(
        Trouble.BROKEN,
        f"{description} broke off a response: {exc or type(exc).__name__}",
        detail=str(exc),
    )

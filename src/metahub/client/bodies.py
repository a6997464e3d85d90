"""Reading a registry's response bodies: whole up to a limit, streamed, or its error words."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import aiohttp
import orjson

from metahub.client.errors import RegistryHttpError, Trouble
from metahub.client.pace import MinimumRate, TooSlow, paced_chunks

ERROR_BODY_LIMIT = 64 * 1024


async def read_limited(
    response: aiohttp.ClientResponse,
    limit: int,
    description: str,
    rate: MinimumRate | None = None,
) -> bytes:
    """The whole body; more than `limit` bytes is an error, not a truncation."""
    data = bytearray()
    try:
        async for chunk in paced_chunks(response.content, rate):
            data += chunk
            if len(data) > limit:
                raise RegistryHttpError(
                    Trouble.TOO_LARGE,
                    f"{description} sent more than {limit} bytes for {response.url.path}",
                    target=response.url.path,
                )
    except TooSlow as exc:
        raise _too_slow(description, response, exc) from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _broken(description, response, exc) from exc
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
    except orjson.JSONDecodeError:
        body = None
    listed = body.get("errors") if isinstance(body, dict) else None
    parts = [
        f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
        for error in (listed if isinstance(listed, list) else [])
        if isinstance(error, dict)
    ]
    return "; ".join(parts) if parts else response.reason or str(response.status)


async def stream(
    response: aiohttp.ClientResponse,
    description: str,
    *,
    skip: int = 0,
    take: int | None = None,
    rate: MinimumRate | None = None,
) -> AsyncGenerator[bytes, None]:
    """The body in chunks, from byte `skip` on and `take` bytes long; released at the end."""
    try:
        async for chunk in paced_chunks(response.content, rate):
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
    except TooSlow as exc:
        raise _too_slow(description, response, exc) from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _broken(description, response, exc) from exc
    finally:
        response.release()


def _broken(
    description: str, response: aiohttp.ClientResponse, exc: BaseException
) -> RegistryHttpError:
    what = f"{response.method} {response.url.path}"
    timed_out = isinstance(exc, TimeoutError)
    return RegistryHttpError(
        Trouble.TIMEOUT if timed_out else Trouble.BROKEN,
        f"{description} timed out sending {what}"
        if timed_out
        else f"{description} broke off {what}: {exc or type(exc).__name__}",
        method=response.method,
        target=response.url.path,
        detail=str(exc),
    )


def _too_slow(
    description: str, response: aiohttp.ClientResponse, exc: TooSlow
) -> RegistryHttpError:
    return RegistryHttpError(
        Trouble.TOO_SLOW,
        f"{description} sent {response.method} {response.url.path} slower than {exc}",
        method=response.method,
        target=response.url.path,
    )

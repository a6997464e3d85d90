"""OCI documents (manifests, indexes, image configs) are JSON objects; this reads one."""

from __future__ import annotations

from typing import Any

import orjson


class NotAJsonObject(ValueError):
    """Bytes that are not JSON, or JSON that is not an object; the message says which."""


def json_object(data: bytes) -> dict[str, Any]:
    """`data` as a JSON object; the error's message reads after the document's name."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise NotAJsonObject(f"is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise NotAJsonObject("is not a JSON object")
    return document

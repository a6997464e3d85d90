"""What kind of manifest a registry sent."""

from __future__ import annotations

import orjson

from metahub.oci import mediatypes


def media_type_of(header: str | None, data: bytes) -> str:
    """A manifest's media type from its Content-Type, or from the document when that is vague."""
    media_type = (header or "").split(";", 1)[0].strip()
    if media_type in mediatypes.MANIFEST_TYPES:
        return media_type
    # Some registries answer application/json; the document's own mediaType then decides.
    try:
        declared = orjson.loads(data).get("mediaType")
    except (orjson.JSONDecodeError, AttributeError):
        declared = None
    if isinstance(declared, str) and declared:
        return declared
    return media_type or mediatypes.OCI_MANIFEST

"""`Link` pagination headers and the media type of a manifest a registry sent."""

from __future__ import annotations

import json

import pytest

from metahub.client.links import next_link
from metahub.client.media import media_type_of
from tests.support.oci import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST

# -- next_link ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ('</v2/a/tags/list?n=2&last=b>; rel="next"', "/v2/a/tags/list?n=2&last=b"),
        ('</v2/a/tags/list?n=2&last=b>;rel="next"', "/v2/a/tags/list?n=2&last=b"),
        ('</v2/a/tags/list?last=b> ; rel = "next"', "/v2/a/tags/list?last=b"),
        (
            '<https://r.example/v2/a/tags/list?last=b>; rel="next"',
            "https://r.example/v2/a/tags/list?last=b",
        ),
        (
            '</v2/a/tags/list?last=a>; rel="prev", </v2/a/tags/list?last=c>; rel="next"',
            "/v2/a/tags/list?last=c",
        ),
        ('</v2/a/tags/list?last=a>; rel="prev"', None),
        ("</v2/a/tags/list?last=a>", None),
    ],
)
def test_next_link(header: str | None, expected: str | None) -> None:
    assert next_link(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("</v2/a/tags/list?last=b>; rel=next", id="token-form"),
        pytest.param('</v2/a/tags/list?last=b>; rel="NEXT"', id="upper-case"),
    ],
)
def test_next_link_accepts_every_spelling_rfc_8288_allows(header: str) -> None:
    # RFC 8288 section 3: a parameter value is a token or a quoted string, and relation types
    # compare case-insensitively.
    assert next_link(header) == "/v2/a/tags/list?last=b"


# -- media_type_of --------------------------------------------------------------------------------


def document(**fields: object) -> bytes:
    return json.dumps({"schemaVersion": 2, **fields}).encode()


@pytest.mark.parametrize(
    ("header", "data", "expected"),
    [
        # A manifest media type in the header wins.
        (OCI_INDEX, document(mediaType=OCI_INDEX), OCI_INDEX),
        (DOCKER_LIST, document(mediaType=OCI_MANIFEST), DOCKER_LIST),
        (DOCKER_MANIFEST, b"", DOCKER_MANIFEST),
        (f"{OCI_MANIFEST}; charset=utf-8", document(), OCI_MANIFEST),
        (f"  {OCI_INDEX} ;q=1", document(), OCI_INDEX),
        # Otherwise the document's own mediaType decides.
        ("application/json", document(mediaType=OCI_INDEX), OCI_INDEX),
        ("application/json; charset=utf-8", document(mediaType=DOCKER_LIST), DOCKER_LIST),
        ("text/plain", document(mediaType=DOCKER_MANIFEST), DOCKER_MANIFEST),
        (None, document(mediaType=OCI_INDEX), OCI_INDEX),
        ("", document(mediaType=DOCKER_MANIFEST), DOCKER_MANIFEST),
        # With neither, an OCI manifest is assumed.
        (None, document(), OCI_MANIFEST),
        (None, b"not json", OCI_MANIFEST),
        (None, b"[1, 2]", OCI_MANIFEST),
        (None, b"null", OCI_MANIFEST),
        (None, document(mediaType=""), OCI_MANIFEST),
        (None, document(mediaType=7), OCI_MANIFEST),
    ],
)
def test_media_type(header: str | None, data: bytes, expected: str) -> None:
    assert media_type_of(header, data) == expected

"""The registry API's own HTTP layer: requests read from an ASGI scope."""

from __future__ import annotations

from metahub.server.http import Request


def scope(headers: list[tuple[bytes, bytes]]) -> dict[str, object]:
    return {"type": "http", "method": "GET", "path": "/v2/", "headers": headers}


def test_repeated_header_lines_are_joined_as_one_list():
    # docker sends one Accept line per manifest type; the last one alone must not decide.
    request = Request(
        scope(
            [
                (b"accept", b"application/vnd.oci.image.index.v1+json"),
                (b"user-agent", b"docker/20.10"),
                (b"accept", b"application/vnd.oci.image.manifest.v1+json"),
            ]
        )
    )
    assert request.headers["accept"] == (
        "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"
    )
    assert request.headers["user-agent"] == "docker/20.10"


def test_header_values_are_latin_1():
    request = Request(scope([(b"x-name", "caf\u00e9".encode("latin-1"))]))
    assert request.headers["x-name"] == "caf\u00e9"

"""The registry API's own HTTP layer: requests read from an ASGI scope, errors rendered."""

from __future__ import annotations

import orjson

from metahub import errors
from metahub.server.api import web_error_response
from metahub.server.http import HEADER_FIELDS, Request, error_response, header_fields


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


def test_an_error_is_rendered_alike_on_the_registry_and_the_web_side():
    error = errors.Unauthorized(
        "log in", detail=[{"Type": "repository"}], headers={"WWW-Authenticate": "Bearer x"}
    )
    registry = error_response(error)
    web = web_error_response(error)
    assert registry.status == web.status_code == 401
    assert registry.body == web.body
    assert orjson.loads(registry.body) == {
        "errors": [
            {"code": "UNAUTHORIZED", "message": "log in", "detail": [{"Type": "repository"}]}
        ]
    }
    assert registry.headers["content-type"] == web.headers["content-type"] == "application/json"
    assert registry.headers["WWW-Authenticate"] == web.headers["www-authenticate"] == "Bearer x"


def test_one_header_reads_as_the_whole_dict_has_it() -> None:
    raw = [
        (b"accept", b"application/vnd.oci.image.index.v1+json"),
        (b"authorization", b"Bearer abc"),
        (b"accept", b"application/json"),
        (b"x-latin", "caf\u00e9".encode("latin-1")),
    ]
    scope = {"method": "GET", "path": "/v2/", "headers": raw}
    names = (b"accept", b"authorization", b"x-latin", b"missing")
    alone = [Request(scope).header(name) for name in names]
    request = Request(scope)
    whole = [request.headers.get(name.decode()) for name in names]
    assert (
        alone
        == whole
        == [
            "application/vnd.oci.image.index.v1+json, application/json",
            "Bearer abc",
            "caf\u00e9",
            None,
        ]
    )
    assert [request.header(name) for name in names] == whole  # after the dict is made


def test_header_fields_made_beforehand_read_as_the_request_would_make_them() -> None:
    raw = [
        (b"accept", b"application/vnd.oci.image.index.v1+json"),
        (b"authorization", b"Bearer abc"),
        (b"accept", b"application/json"),
    ]
    made = header_fields(raw)
    prepared = Request({"method": "GET", "path": "/v2/", "headers": [], HEADER_FIELDS: made})
    parsed = Request({"method": "GET", "path": "/v2/", "headers": raw})

    for name in (b"accept", b"authorization", b"host"):
        assert prepared.header(name) == parsed.header(name)
    assert prepared.headers == parsed.headers

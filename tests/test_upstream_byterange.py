"""`Range` requests (RFC 9110 section 14) and `WWW-Authenticate` challenges (section 11)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metahub.client.challenge import parse_challenge
from metahub.errors import RangeNotSatisfiable
from metahub.upstream.base import ByteRange

# --- ByteRange.parse ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", ByteRange(0, 99)),
        ("bytes=0-0", ByteRange(0, 0)),
        ("bytes=5-5", ByteRange(5, 5)),
        ("bytes=100-", ByteRange(100, None)),
        ("bytes=0-", ByteRange(0, None)),
        ("bytes=-500", ByteRange(None, 500)),
        ("bytes=-0", ByteRange(None, 0)),
        (" bytes = 1 - 2 ", ByteRange(1, 2)),
        ("bytes=00010-00020", ByteRange(10, 20)),
        ("bytes=0-18446744073709551616", ByteRange(0, 2**64)),
    ],
)
def test_parse(header: str, expected: ByteRange) -> None:
    assert ByteRange.parse(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(None, id="absent"),
        pytest.param("", id="empty"),
        pytest.param("bytes=", id="no-range"),
        pytest.param("bytes=-", id="dash-only"),
        pytest.param("bytes=5-4", id="last-before-first"),
        pytest.param("bytes=0-1,5-6", id="multiple-ranges"),
        pytest.param("bytes=0-1, -5", id="range-and-suffix"),
        pytest.param("items=0-1", id="other-unit"),
        pytest.param("bytes 0-1", id="no-equals"),
        pytest.param("0-1", id="no-unit"),
        pytest.param("bytes=a-b", id="letters"),
        pytest.param("bytes=1", id="no-dash"),
        pytest.param("bytes=-1-2", id="negative"),
        pytest.param("bytes=1.5-2", id="fraction"),
        pytest.param("bytes=--5", id="double-dash"),
    ],
)
def test_parse_ignores(header: str | None) -> None:
    """Anything but one well-formed byte range is ignored; the server may then answer 200."""
    assert ByteRange.parse(header) is None


# --- ByteRange.resolve -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "last", "size", "expected"),
    [
        (0, 99, 1000, (0, 99)),
        (0, 0, 1, (0, 0)),
        (9, 9, 10, (9, 9)),
        (5, 1000, 10, (5, 9)),
        (0, None, 10, (0, 9)),
        (7, None, 10, (7, 9)),
        (None, 3, 10, (7, 9)),
        (None, 10, 10, (0, 9)),
        (None, 30, 10, (0, 9)),
        (None, 1, 1, (0, 0)),
    ],
)
def test_resolve(first: int | None, last: int | None, size: int, expected: tuple[int, int]) -> None:
    assert ByteRange(first, last).resolve(size) == expected


@pytest.mark.parametrize(
    ("first", "last", "size"),
    [
        (10, None, 10),
        (10, 20, 10),
        (11, None, 10),
        (0, None, 0),
        (0, 0, 0),
        (None, 3, 0),
        (None, 0, 10),
    ],
)
def test_resolve_unsatisfiable(first: int | None, last: int | None, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        ByteRange(first, last).resolve(size)
    assert info.value.status == 416
    assert info.value.headers["Content-Range"] == f"bytes */{size}"
    assert str(size) in info.value.message


def test_suffix_of_zero_from_a_header_is_unsatisfiable() -> None:
    byte_range = ByteRange.parse("bytes=-0")
    assert byte_range is not None
    with pytest.raises(RangeNotSatisfiable):
        byte_range.resolve(100)


@pytest.mark.parametrize(
    ("byte_range", "header"),
    [
        (ByteRange(0, 99), "bytes=0-99"),
        (ByteRange(5, None), "bytes=5-"),
        (ByteRange(None, 20), "bytes=-20"),
        (ByteRange(0, 0), "bytes=0-0"),
    ],
)
def test_header(byte_range: ByteRange, header: str) -> None:
    assert byte_range.header() == header
    assert ByteRange.parse(header) == byte_range


def rfc_slice(data: bytes, first: int | None, last: int | None) -> bytes | None:
    """What RFC 9110 section 14.1.2 selects, written with Python slicing; None: unsatisfiable."""
    if first is None:
        assert last is not None
        return data[-last:] if last and data else None
    if first >= len(data):
        return None
    return data[first:] if last is None else data[first : last + 1]


ranges = st.one_of(
    st.tuples(st.integers(0, 40), st.integers(0, 40)).map(lambda t: (min(t), max(t))),
    st.tuples(st.integers(0, 40), st.none()),
    st.tuples(st.none(), st.integers(0, 40)),
)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=30), ranges)
def test_resolve_selects_what_the_rfc_says(
    data: bytes, bounds: tuple[int | None, int | None]
) -> None:
    first, last = bounds
    expected = rfc_slice(data, first, last)
    byte_range = ByteRange.parse(
        f"bytes={'' if first is None else first}-{'' if last is None else last}"
    )
    assert byte_range == ByteRange(first, last)
    if expected is None:
        with pytest.raises(RangeNotSatisfiable):
            byte_range.resolve(len(data))
        return
    start, end = byte_range.resolve(len(data))
    assert 0 <= start <= end < len(data)
    assert data[start : end + 1] == expected


# --- parse_challenge ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "scheme", "params"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/ubuntu:pull"',
            "bearer",
            {
                "realm": "https://auth.docker.io/token",
                "service": "registry.docker.io",
                "scope": "repository:library/ubuntu:pull",
            },
        ),
        ('Basic realm="Registry Realm"', "basic", {"realm": "Registry Realm"}),
        ("Basic", "basic", {}),
        ('  Bearer   realm="x"  ', "bearer", {"realm": "x"}),
        ('BEARER Realm="x", SERVICE="y"', "bearer", {"realm": "x", "service": "y"}),
        ("Bearer realm=x,service=y", "bearer", {"realm": "x", "service": "y"}),
        ('Bearer realm = "x" , service = y', "bearer", {"realm": "x", "service": "y"}),
        ('Bearer realm="a,b=c",service="d"', "bearer", {"realm": "a,b=c", "service": "d"}),
        ('Bearer realm=""', "bearer", {"realm": ""}),
        (
            'Bearer realm="https://ghcr.io/token",service="ghcr.io",'
            'scope="repository:user/image:pull",error="insufficient_scope"',
            "bearer",
            {
                "realm": "https://ghcr.io/token",
                "service": "ghcr.io",
                "scope": "repository:user/image:pull",
                "error": "insufficient_scope",
            },
        ),
        ('Bearer realm="say \\"hi\\""', "bearer", {"realm": 'say "hi"'}),
        (
            'Bearer scope="repository:a:pull repository:b:pull"',
            "bearer",
            {"scope": "repository:a:pull repository:b:pull"},
        ),
    ],
)
def test_parse_challenge(header: str, scheme: str, params: dict[str, str]) -> None:
    assert parse_challenge(header) == (scheme, params)


@pytest.mark.parametrize(
    ("header", "realm"),
    [
        ('Bearer realm="a\\\\b"', "a\\b"),  # quoted-pair: \\ is one backslash
        ('Bearer realm="a\\b"', "ab"),  # quoted-pair: \b is b
        ('Bearer realm="end\\\\"', "end\\"),
    ],
)
def test_parse_challenge_unescapes_every_quoted_pair(header: str, realm: str) -> None:
    """RFC 9110 section 5.6.4: a backslash in a quoted-string escapes any following octet."""
    assert parse_challenge(header)[1]["realm"] == realm

"""Hypothesis strategies for fuzzing parsers: valid-looking pieces mixed with hostile ones.

Text is built from fragments a parser's grammar cares about (separators, digests, levels) and
from what breaks naive code: NUL and control characters, lone surrogates, other scripts' digits,
whitespace, numbers thousands of digits long and very long runs. JSON is produced as text, so it
can hold what no encoder writes: NaN, duplicate keys, surrogate escapes, huge integers and
nesting deeper than a parser or a writer allows.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

HEX64 = "0123456789abcdef" * 4
FRAGMENTS = [
    "a", "z", "0", "9", "library", "busybox", "linux", "amd64", "arm64", "arm", "v8", "v3",
    "v99999999", "cpu", "zen3", "skylake", "nvcap", "8.6", "9.0a", "driver", "535.104",
    "platform", "sha256", "sha512", HEX64, HEX64.upper(), "/", ":", "@", "=", ",", ".", "..",
    "-", "_", "__", "+", " ", "\t", "\n", "\r", "\x00", "\x7f", "\x1b", "\ud800", "\udfff",
    "\u00e9", "\u0663", "\uff19", "\u200b", "\ufeff", "\U0001f600", "%2F", "\\", '"', "'",
    "NaN", "Infinity", "-0", "1e999", "9" * 400, "1" * 5000, "a" * 300, "." * 40 + "1",
]  # fmt: skip


def hostile_text(max_pieces: int = 12) -> st.SearchStrategy[str]:
    """Strings near a grammar and far from it; lone surrogates and NUL included."""
    piece = st.one_of(
        st.sampled_from(FRAGMENTS),
        st.text(max_size=6),
        st.characters(),
    )
    return st.one_of(
        st.lists(piece, max_size=max_pieces).map("".join),
        st.text(max_size=40),
        st.text(alphabet="a0:/.@-_v", max_size=3000),
    )


def _key_text(keys: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(keys), hostile_text(4)).map(_json_string)


def _json_string(text: str) -> str:
    # ensure_ascii writes a lone surrogate as `\ud800`: valid JSON syntax, invalid Unicode.
    return json.dumps(text, ensure_ascii=True)


JSON_SCALARS: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(
        [
            "null",
            "true",
            "false",
            "0",
            "-0",
            "1.5",
            "NaN",
            "Infinity",
            "-Infinity",
            "1e999",
            "1" + "0" * 40,
            "-" + "9" * 400,
            '"\\ud800"',
            '"\\u0000"',
            '"\\udfff\\ud800"',
            '""',
        ]
    ),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    hostile_text(6).map(_json_string),
)


def json_text(keys: list[str], max_leaves: int = 20) -> st.SearchStrategy[str]:
    """JSON text (and near-JSON): duplicate keys, NaN, surrogates, deep and wide nesting."""
    nested = st.recursive(
        JSON_SCALARS,
        lambda inner: st.one_of(
            st.lists(inner, max_size=6).map(lambda items: "[" + ",".join(items) + "]"),
            st.lists(st.tuples(_key_text(keys), inner), max_size=6).map(
                lambda pairs: "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"
            ),
        ),
        max_leaves=max_leaves,
    )
    return st.one_of(nested, deep_json(), st.integers(0, 5000).map(lambda n: "[" + "0," * n + "0]"))


def deep_json() -> st.SearchStrategy[str]:
    """Arrays or objects nested around the limits of JSON readers and writers (254, 1024)."""
    return st.tuples(st.integers(1, 1100), st.booleans()).map(
        lambda t: ('{"a":' * t[0] + "0" + "}" * t[0]) if t[1] else "[" * t[0] + "]" * t[0]
    )


def plain_values() -> st.SearchStrategy[Any]:
    """Python values as YAML or JSON readers produce them, of every type."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=10**30, max_value=10**400),
        st.floats(),
        hostile_text(6),
        st.dates(),
        st.binary(max_size=8),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=5),
            st.dictionaries(
                st.one_of(hostile_text(3), st.integers(), st.none()), inner, max_size=5
            ),
        ),
        max_leaves=15,
    )

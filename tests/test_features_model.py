"""`key:value` features, as written in configs and in an index's `platform.features`."""

from __future__ import annotations

import pytest

from metahub.features.model import Feature, InvalidFeature, group_by_key


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("cpu:skylake", "cpu", "skylake"),
        ("nvcap:8.6", "nvcap", "8.6"),
        ("nvcap:9.0a", "nvcap", "9.0a"),
        ("gpu:T4", "gpu", "T4"),
        ("Cpu:x", "Cpu", "x"),
        ("a.b-c_d9:v", "a.b-c_d9", "v"),
        ("cpu:x86_64_v3", "cpu", "x86_64_v3"),
        ("  cpu:skylake  ", "cpu", "skylake"),
    ],
)
def test_parse_valid(text: str, key: str, value: str) -> None:
    feature = Feature.parse(text)
    assert (feature.key, feature.value) == (key, value)
    assert str(feature) == f"{key}:{value}"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("cpu", id="no-colon"),
        pytest.param("cpu:", id="no-value"),
        pytest.param(":skylake", id="no-key"),
        pytest.param("1cpu:x", id="key-starts-with-digit"),
        pytest.param("_cpu:x", id="key-starts-with-underscore"),
        pytest.param("-cpu:x", id="key-starts-with-dash"),
        pytest.param("c pu:x", id="space-in-key"),
        pytest.param("cpu :x", id="space-before-colon"),
        pytest.param("cpu/x:y", id="slash-in-key"),
        pytest.param("cpu: skylake", id="space-after-colon"),
        pytest.param("cpu:sky lake", id="space-in-value"),
        pytest.param("cpu:sky\tlake", id="tab-in-value"),
        pytest.param("cpu:sky\nlake", id="newline-in-value"),
        pytest.param("cpu\n:skylake", id="newline-in-key"),
        pytest.param("cpü:x", id="non-ascii-key"),
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(InvalidFeature):
        Feature.parse(text)


def test_error_quotes_the_text_and_shows_the_form() -> None:
    with pytest.raises(InvalidFeature, match=r"'broadwell'.*key:value"):
        Feature.parse("broadwell")


def test_invalid_feature_is_a_value_error() -> None:
    assert issubclass(InvalidFeature, ValueError)


def test_str_parses_back() -> None:
    for text in ("cpu:skylake", "nvcap:8.6", "a.b:c-d"):
        assert Feature.parse(str(Feature.parse(text))) == Feature.parse(text)


def test_features_are_values_ordered_by_key_then_value() -> None:
    features = [Feature("nvcap", "8.6"), Feature("cpu", "zen2"), Feature("cpu", "haswell")]
    assert sorted(features) == [
        Feature("cpu", "haswell"),
        Feature("cpu", "zen2"),
        Feature("nvcap", "8.6"),
    ]
    assert Feature.parse("cpu:zen2") == Feature("cpu", "zen2")
    assert len({Feature("cpu", "x"), Feature.parse("cpu:x")}) == 1


def test_group_by_key_keeps_every_value_in_order() -> None:
    features = [
        Feature("cpu", "skylake"),
        Feature("nvcap", "8.6"),
        Feature("nvcap", "7.5"),
        Feature("gpu", "t4"),
    ]
    assert dict(group_by_key(features)) == {
        "cpu": ("skylake",),
        "nvcap": ("8.6", "7.5"),
        "gpu": ("t4",),
    }


def test_group_by_key_of_nothing() -> None:
    assert dict(group_by_key([])) == {}

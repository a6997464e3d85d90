"""Outcomes and coverage entries over the shapes indexes take: nested indexes, attestations,
indexes without features, plain image manifests; and the pull counter's outcome per shape.

The layout is test_manifest_service.py's (written with LayoutWriter, digests hashed there).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from metahub import errors
from metahub.hub import Hub
from metahub.serving.coverage import coverage_of
from tests.test_manifest_service import SKY, ZEN, Layout, build_layout, serve, settings_for


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    return build_layout(tmp_path_factory.mktemp("outcome-layout"))


@pytest.fixture
async def hub(layout: Layout, tmp_path: Path) -> AsyncIterator[Hub]:
    started = await Hub.start(settings_for(layout, tmp_path / "data"))
    try:
        yield started
    finally:
        await started.close()


def entry(layout: Layout, label: str, platform: str | None, *features: str) -> dict[str, Any]:
    return {"platform": platform, "features": list(features), "digest": layout.digest(label)}


async def cell(hub: Hub, image: str, machine_type: str) -> dict[str, Any]:
    report = await coverage_of(hub.manifests, hub.profiles, [image], [machine_type])
    row = report["images"][0]
    assert row["image"] == image
    found: dict[str, Any] = row["machine_types"][0]
    return found


async def test_nested_indexes_are_followed_to_the_images_chosen(hub: Hub, layout: Layout) -> None:
    sky = await cell(hub, "svc/nested:latest", "sky")
    assert sky["outcome"] == "matched"
    assert sky["entries"] == [
        entry(layout, "a-skylake", "linux/amd64", "cpu:skylake"),
        entry(layout, "b-generic", "linux/arm64/v8"),
    ]
    deep = await cell(hub, "svc/deep:latest", "sky")
    assert deep["outcome"] == "matched"
    assert deep["entries"] == [entry(layout, "l-broadwell", "linux/amd64", "cpu:broadwell")]


async def test_a_nested_index_where_nothing_fits_leaves_the_generic_build(
    hub: Hub, layout: Layout
) -> None:
    sky = await cell(hub, "svc/nested-fallback:latest", "sky")
    assert sky["outcome"] == "generic"
    assert sky["entries"] == [
        entry(layout, "f-generic", "linux/amd64"),
        entry(layout, "f-arm", "linux/arm64"),
    ]


async def test_attestations_are_not_entries_a_pull_runs(hub: Hub, layout: Layout) -> None:
    sky = await cell(hub, "svc/attest:latest", "sky")
    assert sky["outcome"] == "matched"
    assert sky["entries"] == [
        entry(layout, "t-skylake", "linux/amd64", "cpu:skylake"),
        entry(layout, "t-arm", "linux/arm64"),
    ]
    zen = await cell(hub, "svc/attest:latest", "zen")  # no amd64 build runs on zen3
    assert zen["outcome"] == "generic"
    assert zen["entries"] == [entry(layout, "t-arm", "linux/arm64")]


async def test_indexes_without_features_and_plain_manifests_are_generic(
    hub: Hub, layout: Layout
) -> None:
    nested = await cell(hub, "svc/plain-nested:latest", "sky")
    assert nested["outcome"] == "generic"
    assert nested["served_digest"] == layout.digest("plain-nested")  # served as it is
    assert nested["entries"] == [
        entry(layout, "p-amd", "linux/amd64"),
        entry(layout, "p-arm", "linux/arm64"),
    ]
    single = await cell(hub, "svc/single:latest", "zen")
    assert single["outcome"] == "generic"
    assert single["entries"] == [entry(layout, "single", None)]


async def test_nothing_fitting_is_none(hub: Hub) -> None:
    sky = await cell(hub, "svc/nothing-nested:latest", "sky")  # only a zen2 build, nested
    assert (sky["outcome"], sky["entries"], sky["served_digest"]) == ("none", [], None)


def pulls(machine_type: str, outcome: str) -> float:
    labels = {"machine_type": machine_type, "outcome": outcome}
    return REGISTRY.get_sample_value("metahub_manifest_pulls_total", labels) or 0.0


async def test_pulls_are_counted_with_the_outcome_coverage_gives(hub: Hub, layout: Layout) -> None:
    keys = [("sky", "matched"), ("sky", "none"), ("zen", "generic")]
    before = {key: pulls(*key) for key in keys}
    await serve(hub, "svc/nested", "latest", SKY)
    await serve(hub, "svc/nested", "latest", SKY)  # from the filtered cache
    await serve(hub, "svc/attest", "latest", ZEN)
    with pytest.raises(errors.ManifestUnknown):
        await serve(hub, "svc/nothing-nested", "latest", SKY)
    await serve(hub, "svc/nested", layout.digest("child-a"), SKY)  # by digest: not a pull
    assert pulls("sky", "matched") - before["sky", "matched"] == 2
    assert pulls("sky", "none") - before["sky", "none"] == 1
    assert pulls("zen", "generic") - before["zen", "generic"] == 1

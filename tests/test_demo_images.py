"""Tests for the qnib/bench demo layout: structure, determinism, and that the programs run."""

from __future__ import annotations

import gzip
import io
import json
import platform
import shutil
import struct
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from metahub.demo.images import (
    AMD64_VARIANTS,
    DEMO_REFS,
    GENERIC_MESSAGE,
    LATEST_REF,
    DemoBuildError,
    aarch64_echo_elf,
    build_demo_layout,
)
from metahub.oci.layout_writer import ANNOTATION_REF_NAME, MEDIA_TYPE_IMAGE_INDEX
from tests.test_layout_writer import assert_layout_consistent, read_blob

EXPECTED_LINES = {
    "qnib/bench:cpu-broadwell": ">> This container is optimized for: cpu:broadwell",
    "qnib/bench:cpu-skylake": ">> This container is optimized for: cpu:skylake",
    "qnib/bench:generic": ">> This container is not optimized for a specific microarchitecture",
    "qnib/bench:cpu_broadwell-nvcap_52": (
        ">> This container is optimized for: cpu:broadwell,nvcap:5.2"
    ),
}
EXPECTED_PLATFORMS = [
    {"architecture": "amd64", "os": "linux", "features": ["cpu:broadwell"]},
    {"architecture": "amd64", "os": "linux", "features": ["cpu:skylake"]},
    {"architecture": "amd64", "os": "linux"},
    {"architecture": "amd64", "os": "linux", "features": ["cpu:broadwell", "nvcap:5.2"]},
    {"architecture": "arm64", "os": "linux", "variant": "v8"},
]


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "layout"
    build_demo_layout(path)
    return path


def refs(layout: Path) -> dict[str, dict[str, Any]]:
    index = json.loads((layout / "index.json").read_bytes())
    return {m["annotations"][ANNOTATION_REF_NAME]: m for m in index["manifests"]}


def latest_entries(layout: Path) -> list[dict[str, Any]]:
    descriptor = refs(layout)[LATEST_REF]
    assert descriptor["mediaType"] == MEDIA_TYPE_IMAGE_INDEX
    index = json.loads(read_blob(layout, descriptor))
    assert index["mediaType"] == MEDIA_TYPE_IMAGE_INDEX
    entries: list[dict[str, Any]] = index["manifests"]
    return entries


def extract_bench(layout: Path, manifest_descriptor: dict[str, Any], target: Path) -> Path:
    """Check the image runs /bench from a single-file layer and write that file to target."""
    manifest = json.loads(read_blob(layout, manifest_descriptor))
    config = json.loads(read_blob(layout, manifest["config"]))
    assert config["config"]["Entrypoint"] == ["/bench"]
    assert len(manifest["layers"]) == 1
    layer = gzip.decompress(read_blob(layout, manifest["layers"][0]))
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        assert tar.getnames() == ["bench"]
        member = tar.getmember("bench")
        assert member.isfile() and member.mode == 0o755
        extracted = tar.extractfile(member)
        assert extracted is not None
        target.write_bytes(extracted.read())
    target.chmod(0o755)
    return target


def test_layout_has_the_five_refs(layout: Path) -> None:
    assert list(refs(layout)) == list(DEMO_REFS)
    assert set(DEMO_REFS) == {*EXPECTED_LINES, LATEST_REF}


def test_layout_blobs_and_descriptors_are_consistent(layout: Path) -> None:
    assert_layout_consistent(layout)


def test_latest_index_entries_in_order(layout: Path) -> None:
    entries = latest_entries(layout)
    assert [e["platform"] for e in entries] == EXPECTED_PLATFORMS
    by_ref = refs(layout)
    amd64_digests = [by_ref[ref]["digest"] for ref in EXPECTED_LINES]
    assert [e["digest"] for e in entries[:4]] == amd64_digests
    assert [v.ref for v in AMD64_VARIANTS] == list(EXPECTED_LINES)


def test_amd64_bench_programs_print_their_line(layout: Path, tmp_path: Path) -> None:
    for ref, line in EXPECTED_LINES.items():
        program = extract_bench(layout, refs(layout)[ref], tmp_path / ref.replace("/", "_"))
        assert program.read_bytes()[:4] == b"\x7fELF"
        result = subprocess.run([str(program)], capture_output=True, timeout=30, check=False)
        assert (result.returncode, result.stdout, result.stderr) == (0, f"{line}\n".encode(), b"")


def assert_valid_aarch64_elf(elf: bytes) -> None:
    assert elf[:4] == b"\x7fELF"
    assert elf[4] == 2  # ELFCLASS64
    assert elf[5] == 1  # little-endian
    e_type, e_machine = struct.unpack_from("<HH", elf, 16)
    assert (e_type, e_machine) == (2, 183)
    (entry, phoff) = struct.unpack_from("<QQ", elf, 24)
    phentsize, phnum = struct.unpack_from("<HH", elf, 54)
    loads = []
    for i in range(phnum):
        p_type, p_flags, p_offset, p_vaddr, _, p_filesz, p_memsz, _ = struct.unpack_from(
            "<IIQQQQQQ", elf, phoff + i * phentsize
        )
        if p_type == 1:
            assert p_offset + p_filesz <= len(elf) and p_filesz <= p_memsz
            loads.append((p_flags, p_vaddr, p_filesz))
    assert any(flags & 1 and vaddr <= entry < vaddr + size for flags, vaddr, size in loads)


def aarch64_runner() -> list[str] | None:
    if platform.machine() in ("aarch64", "arm64"):
        return []
    for name in ("qemu-aarch64", "qemu-aarch64-static"):
        found = shutil.which(name)
        if found:
            return [found]
    return None


def test_arm64_image_is_a_valid_echo_program(layout: Path, tmp_path: Path) -> None:
    program = extract_bench(layout, latest_entries(layout)[4], tmp_path / "bench-arm64")
    elf = program.read_bytes()
    assert elf == aarch64_echo_elf(f"{GENERIC_MESSAGE}\n".encode())
    assert_valid_aarch64_elf(elf)
    assert elf.endswith(f"{GENERIC_MESSAGE}\n".encode())
    runner = aarch64_runner()
    # Without an aarch64 machine or qemu the header checks above are all that can be asserted.
    if runner is not None:
        result = subprocess.run([*runner, str(program)], capture_output=True, timeout=30)
        assert (result.returncode, result.stdout) == (0, f"{GENERIC_MESSAGE}\n".encode())


def test_aarch64_echo_elf_rejects_oversized_message() -> None:
    assert_valid_aarch64_elf(aarch64_echo_elf(b"x"))
    with pytest.raises(ValueError):
        aarch64_echo_elf(b"x" * 0x10000)


def test_build_is_idempotent(layout: Path) -> None:
    index_before = (layout / "index.json").stat().st_mtime_ns
    started = time.perf_counter()
    build_demo_layout(layout, cc="no-such-compiler")  # returns before looking for a compiler
    assert time.perf_counter() - started < 1.0
    assert (layout / "index.json").stat().st_mtime_ns == index_before


def test_build_is_reproducible(layout: Path, tmp_path: Path) -> None:
    build_demo_layout(tmp_path)
    assert (tmp_path / "index.json").read_bytes() == (layout / "index.json").read_bytes()
    ours = sorted(p.name for p in (tmp_path / "blobs" / "sha256").iterdir())
    assert ours == sorted(p.name for p in (layout / "blobs" / "sha256").iterdir())


def test_missing_compiler_is_named(tmp_path: Path) -> None:
    with pytest.raises(DemoBuildError, match="no-such-compiler"):
        build_demo_layout(tmp_path, cc="no-such-compiler")
    assert not (tmp_path / "index.json").exists()


def test_missing_static_libc_is_explained(tmp_path: Path) -> None:
    fake_cc = tmp_path / "fake-cc"
    fake_cc.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = -dumpmachine ]; then echo x86_64-linux-gnu; exit 0; fi\n'
        "echo '/usr/bin/ld: cannot find -lc: No such file or directory' >&2\n"
        "exit 1\n"
    )
    fake_cc.chmod(0o755)
    with pytest.raises(DemoBuildError, match="libc6-dev"):
        build_demo_layout(tmp_path / "layout", cc=str(fake_cc))

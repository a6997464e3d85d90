"""Build the seed ``qnib/bench`` example into an OCI image layout.

Each image has no base image: its only layer holds one static ``/bench`` that prints which
build it is. The amd64 builds come from the machine's C compiler with different ``-march``
flags; the arm64 build is a hand-assembled ELF so no cross compiler is needed.
``build_feature_images`` builds such amd64 indexes for any repository and set of builds.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from metahub.oci.layout_writer import (
    Descriptor,
    LayoutWriter,
    image,
    image_index,
    make_layer,
    read_refs,
)

REPOSITORY = "qnib/bench"
LATEST_REF = f"{REPOSITORY}:latest"
GENERIC_MESSAGE = ">> This container is not optimized for a specific microarchitecture"
ENTRYPOINT = ["/bench"]


class DemoBuildError(RuntimeError):
    """The demo images could not be built on this machine (compiler or libc missing)."""


@dataclass(frozen=True, slots=True)
class FeatureImage:
    """One amd64 build of an index: a static program for ``march`` that prints ``message``.

    ``features`` go on the index entry's ``platform.features``; none makes it the generic entry.
    ``variant`` (``v2``, ``v3``: an x86-64 level) goes on the entry's and the config's platform.
    """

    tag: str
    march: str
    features: tuple[str, ...]
    message: str
    variant: str = ""


@dataclass(frozen=True, slots=True)
class Amd64Variant:
    tag: str
    march: str
    features: tuple[str, ...]

    @property
    def ref(self) -> str:
        return f"{REPOSITORY}:{self.tag}"

    @property
    def message(self) -> str:
        if not self.features:
            return GENERIC_MESSAGE
        return f">> This container is optimized for: {','.join(self.features)}"

    @property
    def image(self) -> FeatureImage:
        return FeatureImage(self.tag, self.march, self.features, self.message)


# Order matters: it is the order of the entries in the qnib/bench:latest index.
AMD64_VARIANTS = (
    Amd64Variant("cpu-broadwell", "broadwell", ("cpu:broadwell",)),
    Amd64Variant("cpu-skylake", "skylake", ("cpu:skylake",)),
    Amd64Variant("generic", "x86-64", ()),
    Amd64Variant("cpu_broadwell-nvcap_52", "broadwell", ("cpu:broadwell", "nvcap:5.2")),
)
DEMO_REFS = (*(v.ref for v in AMD64_VARIANTS), LATEST_REF)

_LOAD_ADDRESS = 0x400000
_ELF_HEADER_SIZE = 64
_PROGRAM_HEADER_SIZE = 56


def _a64_movz(register: int, imm16: int) -> int:
    # MOVZ Xd, #imm16 (64-bit, no shift): sf=1 opc=10 100101 hw=00 | imm16 << 5 | Rd.
    return 0xD2800000 | (imm16 << 5) | register


def _a64_adr(register: int, offset: int) -> int:
    # ADR Xd, #offset: op=0 | immlo (offset bits 0-1) << 29 | 10000 << 24 | immhi << 5 | Rd.
    return 0x10000000 | ((offset & 0x3) << 29) | (((offset >> 2) & 0x7FFFF) << 5) | register


# SVC #0: the supervisor call that enters the Linux kernel with the syscall number in x8.
_A64_SVC0 = 0xD4000001
_SYS_WRITE = 64
_SYS_EXIT = 93


def aarch64_echo_elf(message: bytes) -> bytes:
    """Return a static ELF64 AArch64 Linux executable that writes ``message`` to stdout.

    Layout: ELF header, one PT_LOAD program header mapping the whole file read+execute, eight
    instructions, then the message bytes. The exit status is 0.
    """
    if len(message) > 0xFFFF:
        raise ValueError("message too long for a single MOVZ immediate")
    code_offset = _ELF_HEADER_SIZE + _PROGRAM_HEADER_SIZE
    instructions = [
        _a64_movz(0, 1),  # x0 = fd 1 (stdout)
        _a64_adr(1, 7 * 4),  # x1 = &message, which follows the 7 remaining instructions
        _a64_movz(2, len(message)),  # x2 = byte count
        _a64_movz(8, _SYS_WRITE),  # x8 = write
        _A64_SVC0,
        _a64_movz(0, 0),  # x0 = exit status 0
        _a64_movz(8, _SYS_EXIT),  # x8 = exit
        _A64_SVC0,
    ]
    body = struct.pack(f"<{len(instructions)}I", *instructions) + message
    file_size = code_offset + len(body)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0])  # ELFCLASS64, little-endian, version 1, SysV ABI
    header = struct.pack(
        "<16sHHIQQQIHHHHHH",
        ident,
        2,  # e_type: ET_EXEC
        183,  # e_machine: EM_AARCH64
        1,  # e_version
        _LOAD_ADDRESS + code_offset,  # e_entry: first instruction
        _ELF_HEADER_SIZE,  # e_phoff: program header right after the ELF header
        0,  # e_shoff: no section headers are needed to execute
        0,  # e_flags
        _ELF_HEADER_SIZE,
        _PROGRAM_HEADER_SIZE,
        1,  # e_phnum
        64,  # e_shentsize
        0,  # e_shnum
        0,  # e_shstrndx
    )
    program_header = struct.pack(
        "<IIQQQQQQ",
        1,  # p_type: PT_LOAD
        5,  # p_flags: PF_R | PF_X
        0,  # p_offset: map from the start of the file so offsets equal address deltas
        _LOAD_ADDRESS,  # p_vaddr
        _LOAD_ADDRESS,  # p_paddr
        file_size,  # p_filesz
        file_size,  # p_memsz
        0x1000,  # p_align: page size; vaddr and offset agree modulo it
    )
    return header + program_header + body


def _c_string_literal(text: str) -> str:
    # Octal escapes for anything but plain printable ASCII keep the generated C unambiguous.
    escaped = "".join(
        chr(b) if 0x20 <= b < 0x7F and b not in b'"\\?' else f"\\{b:03o}" for b in text.encode()
    )
    return f'"{escaped}"'


def _c_source(message: str) -> str:
    return (
        "#include <unistd.h>\n"
        f"static const char msg[] = {_c_string_literal(message + chr(10))};\n"
        "int main(void) {\n"
        "    ssize_t n = (ssize_t)(sizeof msg - 1);\n"
        "    return write(1, msg, sizeof msg - 1) == n ? 0 : 1;\n"
        "}\n"
    )


def _check_compiler(cc: str) -> str:
    path = shutil.which(cc)
    if path is None:
        raise DemoBuildError(
            f"C compiler {cc!r} not found on PATH; the demo images need one "
            "(e.g. apt-get install gcc libc6-dev)"
        )
    target = subprocess.run(
        [path, "-dumpmachine"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not target.startswith("x86_64"):
        raise DemoBuildError(f"C compiler {cc!r} targets {target or 'unknown'!r}, not x86_64")
    return path


def _compile_static(cc: str, source: str, march: str, workdir: Path) -> bytes:
    # Each build gets its own subdirectory: two variants may share a -march value.
    workdir.mkdir()
    src = workdir / "bench.c"
    out = workdir / "bench"
    src.write_text(source)
    # Fixed epoch and C locale keep output reproducible and error messages recognisable.
    env = {**os.environ, "SOURCE_DATE_EPOCH": "0", "LC_ALL": "C"}
    cmd = [cc, "-static", "-O2", f"-march={march}", "-s", "-o", str(out), str(src)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        stderr = result.stderr.strip()
        if "-lc" in stderr or "crt1.o" in stderr or "unistd.h" in stderr:
            raise DemoBuildError(
                f"static linking with {cc!r} failed: static libc missing "
                f"(install libc6-dev):\n{stderr}"
            )
        raise DemoBuildError(f"{' '.join(cmd)} failed:\n{stderr}")
    return out.read_bytes()


def _has_ref(path: Path, ref_name: str) -> bool:
    try:
        return ref_name in read_refs(path)
    except ValueError:
        # A damaged index.json is not trusted as "already built"; LayoutWriter reports it.
        return False


def _bench_image(
    writer: LayoutWriter, program: bytes, architecture: str, variant: str | None = None
) -> Descriptor:
    return image(
        writer,
        layers=[make_layer({"bench": (program, 0o755)})],
        entrypoint=ENTRYPOINT,
        os="linux",
        architecture=architecture,
        variant=variant,
    )


def _write_feature_images(
    writer: LayoutWriter,
    repository: str,
    builds: Iterable[FeatureImage],
    compiler: str,
    workdir: Path,
) -> list[Descriptor]:
    """Compile, write and tag each build as ``repository:tag``; return its index entries."""
    entries: list[Descriptor] = []
    for build in builds:
        source = _c_source(build.message)
        program = _compile_static(compiler, source, build.march, workdir / build.tag)
        descriptor = _bench_image(writer, program, "amd64", build.variant or None)
        writer.tag(f"{repository}:{build.tag}", descriptor)
        if build.features:
            # features is the product's selector; only the index entry carries it.
            platform: dict[str, object] = {"architecture": "amd64", "os": "linux"}
            if build.variant:
                platform["variant"] = build.variant
            descriptor = {**descriptor, "platform": {**platform, "features": [*build.features]}}
        entries.append(descriptor)
    return entries


def build_feature_images(
    path: Path,
    repository: str,
    builds: Iterable[FeatureImage],
    *,
    index_tag: str = "latest",
    cc: str = "cc",
) -> Descriptor:
    """Build each amd64 image into the OCI layout at ``path`` and an index over them in order.

    Each build is tagged ``repository:tag``, the index ``repository:index_tag``; returns the
    index's descriptor. Not idempotent like ``build_demo_layout``: it always compiles, but equal
    builds give equal digests, so rebuilding only rewrites ``index.json``.
    """
    compiler = _check_compiler(cc)
    writer = LayoutWriter(path)
    with tempfile.TemporaryDirectory(prefix="metahub-images-") as tmp:
        entries = _write_feature_images(writer, repository, builds, compiler, Path(tmp))
    index = image_index(writer, entries)
    writer.tag(f"{repository}:{index_tag}", index)
    writer.save()
    return index


def build_demo_layout(path: Path, *, cc: str = "cc") -> None:
    """Build the ``qnib/bench`` seed images into the OCI layout at ``path``.

    Idempotent: returns at once when ``qnib/bench:latest`` is already tagged there.
    """
    if _has_ref(path, LATEST_REF):
        return
    compiler = _check_compiler(cc)
    writer = LayoutWriter(path)
    builds = [variant.image for variant in AMD64_VARIANTS]
    with tempfile.TemporaryDirectory(prefix="metahub-demo-") as tmp:
        entries = _write_feature_images(writer, REPOSITORY, builds, compiler, Path(tmp))
    # The demo's index also offers arm64, which build_feature_images does not build.
    arm64_program = aarch64_echo_elf(GENERIC_MESSAGE.encode() + b"\n")
    entries.append(_bench_image(writer, arm64_program, "arm64", "v8"))
    writer.tag(LATEST_REF, image_index(writer, entries))
    writer.save()

"""This host's GPUs, driver and CUDA version: NVML first, then `nvidia-smi`.

NVML (the driver's library, through ctypes: nvml.py) answers without starting a process, and
alone knows the highest CUDA version the driver supports. When its library is missing (no
driver installed, or a container without the driver's user-space libraries) `nvidia-smi` is
asked for the compute capabilities instead. A host without a GPU is not an error: it has no
capabilities, no driver and no CUDA version.
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from dataclasses import dataclass

from metahub.host import nvml

SMI_QUERY = ("--query-gpu=index,name,compute_cap", "--format=csv,noheader")
SMI_TIMEOUT = 15.0
_CAPABILITY_RE = re.compile(r"^\d+\.\d+\Z")


@dataclass(frozen=True, slots=True)
class Gpu:
    index: int
    name: str
    capability: str  # "8.6"


@dataclass(frozen=True, slots=True)
class GpuReport:
    """What was found, where, and why nothing was when nothing was."""

    gpus: tuple[Gpu, ...]
    source: str | None  # "nvml", "nvidia-smi", or None when neither could tell
    notes: tuple[str, ...] = ()
    driver: str | None = None  # the driver's version, from NVML only
    cuda: str | None = None  # the highest CUDA version the driver supports, from NVML only

    @property
    def capabilities(self) -> tuple[str, ...]:
        """Distinct capabilities, lowest first: one `nvcap` feature each."""
        return tuple(sorted({gpu.capability for gpu in self.gpus}, key=capability_key))


def capability_key(value: str) -> tuple[int, ...]:
    return tuple(int(part) for part in value.split("."))


class SmiError(RuntimeError):
    """nvidia-smi ran but said something that is not a list of GPUs."""


def from_nvml(library: str | None = None) -> nvml.NvmlReport | str:
    """What NVML knows (driver, CUDA version, GPUs), or why NVML could not be asked."""
    try:
        return nvml.query(library)
    except nvml.NvmlError as exc:
        return f"NVML: {exc}"


def parse_smi(output: str, returncode: int = 0) -> tuple[Gpu, ...]:
    """Parse `nvidia-smi --query-gpu=index,name,compute_cap --format=csv,noheader`.

    "No devices were found" is a host without GPUs (nvidia-smi exits 6 then). Anything else
    that is not one line per GPU (a driver that cannot be reached, a driver too old to know
    `compute_cap`) raises SmiError with nvidia-smi's own first line.
    """
    text = output.strip()
    if "No devices were found" in text:
        return ()
    gpus: list[Gpu] = []
    for row in csv.reader(text.splitlines(), skipinitialspace=True):
        if not row:
            continue
        if len(row) != 3 or not row[0].strip().isdigit():
            raise SmiError(_first_line(text))
        index, name, capability = (cell.strip() for cell in row)
        if not _CAPABILITY_RE.match(capability):
            raise SmiError(f"GPU {index} ({name}) reports compute capability {capability!r}")
        gpus.append(Gpu(int(index), name, capability))
    if returncode != 0:
        raise SmiError(_first_line(text) or f"nvidia-smi exited with {returncode}")
    return tuple(gpus)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def from_smi(executable: str = "nvidia-smi") -> tuple[Gpu, ...] | str:
    """The GPUs nvidia-smi lists, or why it could not tell."""
    path = shutil.which(executable)
    if path is None:
        return f"{executable} not found"
    try:
        result = subprocess.run(
            [path, *SMI_QUERY],
            capture_output=True,
            text=True,
            timeout=SMI_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{executable}: {exc}"
    try:
        return parse_smi(result.stdout + result.stderr, result.returncode)
    except SmiError as exc:
        return f"{executable}: {exc}"


def detect_gpus(smi: str = "nvidia-smi", library: str | None = None) -> GpuReport:
    from_library = from_nvml(library)
    if not isinstance(from_library, str):
        gpus = tuple(Gpu(d.index, d.name, d.capability) for d in from_library.devices)
        return GpuReport(gpus, "nvml", (), from_library.driver, from_library.cuda)
    smi_result = from_smi(smi)
    if not isinstance(smi_result, str):
        return GpuReport(smi_result, "nvidia-smi", (from_library,))
    return GpuReport((), None, (from_library, smi_result))

"""What this host is, as MetaHub features: `metahub detect`.

- `cpu:<name>`: exactly what `archspec.cpu.host().name` says (Spack's names, the ones selection
  matches against).
- `platform:<os>/<arch>[/<variant>]`: the platform runtimes pull for, with the amd64 level
  (v2, v3, v4) of the generic x86-64 target the CPU descends from, and arm64 as `arm64/v8`.
- `nvcap:X.Y`: one per distinct GPU compute capability (gpu.py); none without a GPU.
- `driver:<version>` and `cuda:<X.Y>`: the NVIDIA driver's version and the highest CUDA
  version it supports, from NVML (nvml.py); none without NVML, and the notes say why.
- `ht:on|off`: simultaneous multithreading, from sysfs, else lscpu, else /proc/cpuinfo.
- `instType:<type>`: the cloud instance type, only when asked for (cloud.py).
"""

from __future__ import annotations

import platform as stdlib_platform
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import archspec.cpu

from metahub.host import cloud, gpu

SMT_ACTIVE = Path("/sys/devices/system/cpu/smt/active")
CPUINFO = Path("/proc/cpuinfo")
_LEVEL_RE = re.compile(r"^x86_64_v(\d)\Z")


@dataclass(frozen=True, slots=True)
class HostReport:
    cpu: str
    platform: str
    nvcap: tuple[str, ...]
    ht: str | None
    instance_type: str | None = None
    gpus: gpu.GpuReport | None = None
    notes: tuple[str, ...] = field(default=())
    driver: str | None = None
    cuda: str | None = None

    @property
    def features(self) -> list[str]:
        """One `key:value` line each, in a fixed order."""
        lines = [f"cpu:{self.cpu}", f"platform:{self.platform}"]
        lines += [f"nvcap:{value}" for value in self.nvcap]
        if self.driver is not None:
            lines.append(f"driver:{self.driver}")
        if self.cuda is not None:
            lines.append(f"cuda:{self.cuda}")
        if self.ht is not None:
            lines.append(f"ht:{self.ht}")
        if self.instance_type is not None:
            lines.append(f"instType:{self.instance_type}")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "cpu": self.cpu,
            "platform": self.platform,
            "nvcap": list(self.nvcap),
            "driver": self.driver,
            "cuda": self.cuda,
            "ht": self.ht,
            "instType": self.instance_type,
            "gpus": [
                {"index": g.index, "name": g.name, "capability": g.capability}
                for g in (self.gpus.gpus if self.gpus else ())
            ],
            "gpu_source": self.gpus.source if self.gpus else None,
            "notes": list(self.notes),
        }


def amd64_level(target: archspec.cpu.Microarchitecture) -> int:
    """The x86-64 microarchitecture level (1-4) of the generic target `target` descends from."""
    levels = [
        int(match.group(1))
        for candidate in (target, *target.ancestors)
        if (match := _LEVEL_RE.match(candidate.name))
    ]
    return max(levels, default=1)


def host_platform(target: archspec.cpu.Microarchitecture | None = None) -> str:
    """`linux/amd64/v3`, `linux/arm64/v8`, ...: what a runtime on this host pulls."""
    target = target or archspec.cpu.host()
    system = stdlib_platform.system().lower() or "linux"
    family = str(target.family.name)
    if family == "x86_64":
        level = amd64_level(target)
        return f"{system}/amd64" + (f"/v{level}" if level > 1 else "")
    if family == "aarch64":
        return f"{system}/arm64/v8"
    machine = stdlib_platform.machine().lower()
    if machine.startswith("armv") and machine[4:5].isdigit():
        return f"{system}/arm/v{machine[4]}"
    known = {"x86": "386", "i686": "386", "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x"}
    return f"{system}/{known.get(family, family)}"


def hyperthreading(
    smt_active: Path = SMT_ACTIVE, cpuinfo: Path = CPUINFO, lscpu: str = "lscpu"
) -> str | None:
    """`on` when sibling hardware threads are online, `off` when not, None when unknowable."""
    try:
        return "on" if smt_active.read_text().strip() == "1" else "off"
    except OSError:
        pass
    threads = _lscpu_threads_per_core(lscpu)
    if threads is not None:
        return "on" if threads > 1 else "off"
    try:
        return smt_from_cpuinfo(cpuinfo.read_text())
    except OSError:
        return None


def _lscpu_threads_per_core(executable: str) -> int | None:
    path = shutil.which(executable)
    if path is None:
        return None
    try:
        result = subprocess.run(
            [path],
            capture_output=True,
            text=True,
            timeout=10,
            env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"^Thread\(s\) per core:\s*(\d+)", result.stdout, re.MULTILINE)
    return int(match.group(1)) if match else None


def smt_from_cpuinfo(text: str) -> str | None:
    """x86's /proc/cpuinfo: more `siblings` (threads per package) than `cpu cores` means SMT."""
    siblings = re.search(r"^siblings\s*:\s*(\d+)", text, re.MULTILINE)
    cores = re.search(r"^cpu cores\s*:\s*(\d+)", text, re.MULTILINE)
    if siblings is None or cores is None:
        return None
    return "on" if int(siblings.group(1)) > int(cores.group(1)) else "off"


def detect(*, with_cloud: bool = False, smi: str = "nvidia-smi") -> HostReport:
    """Everything `metahub detect` prints. Asks the cloud metadata service only if told to."""
    target = archspec.cpu.host()
    gpus = gpu.detect_gpus(smi)
    # Why nothing was found: no GPU, or no NVML (then no driver or CUDA version either).
    notes = list(gpus.notes) if not gpus.gpus or gpus.driver is None else []
    instance_type = None
    if with_cloud:
        instance_type = cloud.instance_type()
        if instance_type is None:
            notes.append("no cloud metadata service answered")
    return HostReport(
        cpu=str(target.name),
        platform=host_platform(target),
        nvcap=gpus.capabilities,
        ht=hyperthreading(),
        instance_type=instance_type,
        gpus=gpus,
        notes=tuple(notes),
        driver=gpus.driver,
        cuda=gpus.cuda,
    )

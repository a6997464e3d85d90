"""The few NVML calls `metahub detect` makes, through ctypes on the driver's libnvidia-ml.so.1.

NVML is the driver's own C library: it answers without starting a process, and it is the only
source of the highest CUDA version the driver supports. ctypes keeps it a plain shared library
call, so any library that exports these functions (the driver's, or a stand-in) is read the
same way. `METAHUB_NVML_LIBRARY` names another library file (a driver installed outside the
loader's path).

Calls: nvmlInit_v2, nvmlSystemGetDriverVersion, nvmlSystemGetCudaDriverVersion_v2 (else
nvmlSystemGetCudaDriverVersion), nvmlDeviceGetCount_v2, nvmlDeviceGetHandleByIndex_v2,
nvmlDeviceGetName, nvmlDeviceGetCudaComputeCapability, nvmlErrorString, nvmlShutdown.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
from dataclasses import dataclass
from typing import Any

LIBRARY_ENV = "METAHUB_NVML_LIBRARY"
DEFAULT_LIBRARY = "libnvidia-ml.so.1"
NVML_SUCCESS = 0
# nvml.h: NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE and NVML_DEVICE_NAME_V2_BUFFER_SIZE.
DRIVER_VERSION_BUFFER = 80
DEVICE_NAME_BUFFER = 96
# A driver reports at most a few dozen devices; a library that claims more is not believed.
MAX_DEVICES = 1024
_VERSION_RE = re.compile(r"^[0-9]{1,9}(?:\.[0-9]{1,9}){0,3}\Z")


class NvmlError(RuntimeError):
    """NVML could not be loaded, or a call returned an error: the message says which."""


@dataclass(frozen=True, slots=True)
class NvmlDevice:
    index: int
    name: str
    capability: str  # "8.6"


@dataclass(frozen=True, slots=True)
class NvmlReport:
    driver: str  # "535.104.05"
    cuda: str  # the highest CUDA version the driver supports: "12.2"
    devices: tuple[NvmlDevice, ...]


def library_path() -> str:
    return os.environ.get(LIBRARY_ENV) or DEFAULT_LIBRARY


def cuda_version(encoded: int) -> str:
    """NVML's CUDA version integer (1000 * major + 10 * minor: 12020) as `12.2`."""
    return f"{encoded // 1000}.{encoded % 1000 // 10}"


def _text(buffer: ctypes.Array[ctypes.c_char]) -> str:
    return buffer.value.decode("utf-8", errors="replace")


class _Library:
    """The loaded library, each call checked: a non-zero return raises with NVML's words."""

    def __init__(self, path: str) -> None:
        try:
            self._lib = ctypes.CDLL(path)
        except OSError as exc:
            raise NvmlError(f"cannot load {path}: {exc}") from exc
        self.path = path
        error_string = self._function("nvmlErrorString")
        if error_string is not None:
            error_string.restype = ctypes.c_char_p
            error_string.argtypes = [ctypes.c_int]
        self._error_string = error_string

    def _function(self, name: str) -> Any:
        """The exported function `name` (a ctypes function pointer), or None."""
        return getattr(self._lib, name, None)

    def has(self, name: str) -> bool:
        return self._function(name) is not None

    def call(self, name: str, *args: object) -> None:
        function = self._function(name)
        if function is None:
            raise NvmlError(f"{self.path} has no {name}")
        status = int(function(*args))
        if status != NVML_SUCCESS:
            raise NvmlError(f"{name}: {self._describe(status)}")

    def _describe(self, status: int) -> str:
        if self._error_string is not None:
            text = self._error_string(status)
            if isinstance(text, bytes) and text:
                return f"{text.decode('utf-8', errors='replace')} (error {status})"
        return f"error {status}"


def query(path: str | None = None) -> NvmlReport:
    """Driver version, CUDA version and devices; NvmlError says why NVML could not tell."""
    lib = _Library(path or library_path())
    lib.call("nvmlInit_v2")
    try:
        return _report(lib)
    finally:
        # What was read (or why not) is the answer; a failing shutdown changes neither.
        with contextlib.suppress(NvmlError):
            lib.call("nvmlShutdown")


def _report(lib: _Library) -> NvmlReport:
    driver = ctypes.create_string_buffer(DRIVER_VERSION_BUFFER)
    lib.call("nvmlSystemGetDriverVersion", driver, ctypes.c_uint(DRIVER_VERSION_BUFFER))
    encoded = ctypes.c_int()
    if lib.has("nvmlSystemGetCudaDriverVersion_v2"):
        lib.call("nvmlSystemGetCudaDriverVersion_v2", ctypes.byref(encoded))
    else:
        lib.call("nvmlSystemGetCudaDriverVersion", ctypes.byref(encoded))
    count = ctypes.c_uint()
    lib.call("nvmlDeviceGetCount_v2", ctypes.byref(count))
    if count.value > MAX_DEVICES:
        raise NvmlError(f"nvmlDeviceGetCount_v2 reports {count.value} devices")
    devices = []
    for index in range(count.value):
        handle = ctypes.c_void_p()
        lib.call("nvmlDeviceGetHandleByIndex_v2", ctypes.c_uint(index), ctypes.byref(handle))
        name = ctypes.create_string_buffer(DEVICE_NAME_BUFFER)
        lib.call("nvmlDeviceGetName", handle, name, ctypes.c_uint(DEVICE_NAME_BUFFER))
        major, minor = ctypes.c_int(), ctypes.c_int()
        lib.call(
            "nvmlDeviceGetCudaComputeCapability", handle, ctypes.byref(major), ctypes.byref(minor)
        )
        if major.value < 0 or minor.value < 0:
            raise NvmlError(f"device {index} reports capability {major.value}.{minor.value}")
        devices.append(NvmlDevice(index, _text(name), f"{major.value}.{minor.value}"))
    if encoded.value <= 0:
        raise NvmlError(f"the driver reports CUDA version {encoded.value}")
    version = _text(driver)
    if not _VERSION_RE.match(version):
        raise NvmlError(f"the driver reports version {version!r}, not a dotted version")
    return NvmlReport(version, cuda_version(encoded.value), tuple(devices))

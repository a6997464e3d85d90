"""NVML through ctypes: driver version, CUDA version and GPUs, from a real shared library.

This machine has no GPU, so the library is a stand-in compiled with gcc here
(tests/support/nvml_stub.py) exporting NVML's functions with their C signatures; MetaHub
loads it by path (`METAHUB_NVML_LIBRARY`) exactly as it loads the driver's. Expected values
are what the stub is told to answer, and NVML's documented encoding of CUDA versions
(1000 * major + 10 * minor).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metahub.features.matchers import AtLeastMatcher, MatcherRegistry
from metahub.host import detect, gpu, nvml
from tests.support import nvml_stub

STUB_ENV = ("STUB_NVML_DRIVER", "STUB_NVML_CUDA", "STUB_NVML_DEVICES", "STUB_NVML_FAIL")


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return nvml_stub.build(tmp_path_factory.mktemp("nvml"))


@pytest.fixture(scope="module")
def old_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return nvml_stub.build(tmp_path_factory.mktemp("nvml-old"), cuda_v2=False)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*STUB_ENV, "STUB_NVML_STATUS", nvml.LIBRARY_ENV):
        monkeypatch.delenv(name, raising=False)


def metahub_detect(library: Path | str, **stub: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("METAHUB_", "STUB_NVML"))}
    return subprocess.run(
        [sys.executable, "-m", "metahub", "detect", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        # No nvidia-smi on this PATH: NVML alone answers.
        env={**base, "PATH": "/usr/bin:/bin", nvml.LIBRARY_ENV: str(library), **stub},
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_cuda_version_encoding() -> None:
    assert nvml.cuda_version(12020) == "12.2"
    assert nvml.cuda_version(12040) == "12.4"
    assert nvml.cuda_version(11080) == "11.8"
    assert nvml.cuda_version(10010) == "10.1"


def test_query_reads_driver_cuda_and_devices(
    library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STUB_NVML_DRIVER", "550.54.15")
    monkeypatch.setenv("STUB_NVML_CUDA", "12040")
    monkeypatch.setenv("STUB_NVML_DEVICES", "NVIDIA H100 80GB HBM3=9.0;NVIDIA A10=8.6")
    report = nvml.query(str(library))
    assert report == nvml.NvmlReport(
        "550.54.15",
        "12.4",
        (
            nvml.NvmlDevice(0, "NVIDIA H100 80GB HBM3", "9.0"),
            nvml.NvmlDevice(1, "NVIDIA A10", "8.6"),
        ),
    )


def test_the_library_path_comes_from_the_environment(
    library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert nvml.library_path() == "libnvidia-ml.so.1"
    monkeypatch.setenv(nvml.LIBRARY_ENV, str(library))
    assert nvml.library_path() == str(library)
    assert nvml.query().driver == "535.104.05"  # the stub's default


def test_older_drivers_without_the_v2_call(
    old_library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STUB_NVML_CUDA", "11080")
    assert nvml.query(str(old_library)).cuda == "11.8"


def test_a_driver_without_gpus_still_has_versions(library: Path) -> None:
    report = gpu.detect_gpus(smi="/nonexistent/nvidia-smi", library=str(library))
    assert report.gpus == () and report.source == "nvml"
    assert (report.driver, report.cuda) == ("535.104.05", "12.2")


def test_a_missing_library_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "libnvidia-ml.so.1"
    with pytest.raises(nvml.NvmlError, match=f"cannot load {missing}"):
        nvml.query(str(missing))
    reason = gpu.from_nvml(str(missing))
    assert isinstance(reason, str) and reason.startswith(f"NVML: cannot load {missing}")


@pytest.mark.parametrize(
    ("function", "status", "says"),
    [
        ("nvmlInit_v2", "9", "nvmlInit_v2: Driver Not Loaded (error 9)"),
        (
            "nvmlSystemGetDriverVersion",
            "999",
            "nvmlSystemGetDriverVersion: Unknown Error (error 999)",
        ),
        ("nvmlSystemGetCudaDriverVersion_v2", "3", "Not Supported (error 3)"),
        ("nvmlDeviceGetCount_v2", "9", "nvmlDeviceGetCount_v2: Driver Not Loaded"),
        ("nvmlDeviceGetCudaComputeCapability", "3", "nvmlDeviceGetCudaComputeCapability: Not"),
    ],
)
def test_an_error_return_is_worded_by_nvml(
    library: Path, monkeypatch: pytest.MonkeyPatch, function: str, status: str, says: str
) -> None:
    monkeypatch.setenv("STUB_NVML_DEVICES", "NVIDIA A100=8.0")
    monkeypatch.setenv("STUB_NVML_FAIL", function)
    monkeypatch.setenv("STUB_NVML_STATUS", status)
    with pytest.raises(nvml.NvmlError) as error:
        nvml.query(str(library))
    assert says in str(error.value)


@pytest.mark.parametrize(
    ("stub", "says"),
    [
        ({"STUB_NVML_DRIVER": "535.104.05 beta"}, "not a dotted version"),
        ({"STUB_NVML_DRIVER": ""}, "not a dotted version"),
        ({"STUB_NVML_CUDA": "0"}, "CUDA version 0"),
        ({"STUB_NVML_DEVICES": "odd=-1.0"}, "capability -1.0"),
    ],
)
def test_answers_that_are_no_versions_are_refused(
    library: Path, monkeypatch: pytest.MonkeyPatch, stub: dict[str, str], says: str
) -> None:
    for name, value in stub.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(nvml.NvmlError, match=says):
        nvml.query(str(library))


# -- through `metahub detect` ---------------------------------------------------------------------


def test_detect_prints_driver_and_cuda_next_to_nvcap(library: Path) -> None:
    result = metahub_detect(
        library,
        STUB_NVML_DRIVER="550.54.15",
        STUB_NVML_CUDA="12040",
        STUB_NVML_DEVICES="NVIDIA A100=8.0;NVIDIA A100=8.0;NVIDIA L4=8.9",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["gpu_source"] == "nvml"
    assert report["driver"] == "550.54.15" and report["cuda"] == "12.4"
    gpu_lines = [f for f in report["features"] if f.split(":")[0] in {"nvcap", "driver", "cuda"}]
    assert gpu_lines == ["nvcap:8.0", "nvcap:8.9", "driver:550.54.15", "cuda:12.4"]
    assert report["notes"] == []
    lines = subprocess.run(
        [sys.executable, "-m", "metahub", "detect"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": "/usr/bin:/bin", nvml.LIBRARY_ENV: str(library)},
        check=True,
    ).stdout.splitlines()
    assert "driver:535.104.05" in lines and "cuda:12.2" in lines


def test_detect_without_nvml_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "libnvidia-ml.so.1"
    result = metahub_detect(missing)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["driver"] is None and report["cuda"] is None
    assert not any(f.startswith(("driver:", "cuda:", "nvcap:")) for f in report["features"])
    assert report["notes"][0].startswith(f"NVML: cannot load {missing}")


def test_detect_with_a_failing_driver_says_so(library: Path) -> None:
    result = metahub_detect(library, STUB_NVML_FAIL="nvmlInit_v2")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["driver"] is None
    assert report["notes"][0] == "NVML: nvmlInit_v2: Driver Not Loaded (error 9)"


def test_driver_and_cuda_are_matched_at_least() -> None:
    registry = MatcherRegistry()
    for key in ("driver", "cuda"):
        assert isinstance(registry.for_key(key), AtLeastMatcher)
    assert registry.for_key("cuda").fit("cuda", "12.2", {"cuda": ("12.4",)}).ok
    assert not registry.for_key("cuda").fit("cuda", "12.4", {"cuda": ("12.2",)}).ok
    assert registry.for_key("driver").fit("driver", "535.54", {"driver": ("535.104.05",)}).ok
    assert not registry.for_key("driver").fit("driver", "550", {"driver": ("535.104.05",)}).ok
    assert {"driver", "cuda"} <= registry.machine_keys()


def test_host_report_lines_order() -> None:
    report = detect.HostReport(
        "zen3", "linux/amd64/v3", ("8.0",), "on", driver="550.1", cuda="12.4"
    )
    assert report.features == [
        "cpu:zen3",
        "platform:linux/amd64/v3",
        "nvcap:8.0",
        "driver:550.1",
        "cuda:12.4",
        "ht:on",
    ]


def test_a_failing_shutdown_does_not_hide_the_answer(
    library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STUB_NVML_FAIL", "nvmlShutdown")
    assert nvml.query(str(library)).driver == "535.104.05"

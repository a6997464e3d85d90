"""`metahub detect` on this machine, checked against archspec and /proc/cpuinfo directly.

GPU detection is checked with `nvidia-smi` answers written in the formats the tool documents
(`--query-gpu=... --format=csv,noheader`, and its error messages) through the parser, and through
the command by an `nvidia-smi` on PATH that prints such an answer;
NVML is whatever this machine has. The cloud metadata service is a local HTTP server that
answers as EC2 (IMDSv2), GCE and Azure do.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import archspec.cpu
import pytest

from metahub.host import cloud, detect, gpu

# x86-64 psABI microarchitecture levels, as /proc/cpuinfo names the flags (lzcnt is `abm`,
# OSXSAVE shows as `xsave` plus the kernel's support for it).
LEVEL_FLAGS = {
    2: {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"},
    3: {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"},
    4: {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"},
}


def metahub(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("METAHUB_")}
    return subprocess.run(
        [sys.executable, "-m", "metahub", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def cpuinfo() -> str:
    return Path("/proc/cpuinfo").read_text()


def cpu_flags() -> set[str]:
    match = re.search(r"^flags\s*:\s*(.*)$", cpuinfo(), re.MULTILINE)
    assert match, "/proc/cpuinfo has no flags line"
    return set(match.group(1).split())


def level_from_flags(flags: set[str]) -> int:
    level = 1
    for candidate in (2, 3, 4):
        if not LEVEL_FLAGS[candidate] <= flags:
            break
        level = candidate
    return level


def no_nvml() -> bool:
    return ctypes.util.find_library("nvidia-ml") is None


# -- this machine ---------------------------------------------------------------------------------


def test_detect_prints_the_host_s_features_one_per_line() -> None:
    result = metahub("detect")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"cpu:{archspec.cpu.host().name}"
    assert lines[1].startswith("platform:linux/")
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*:\S+", line) for line in lines), lines
    assert [line.split(":")[0] for line in lines if not line.startswith("nvcap:")] == [
        "cpu",
        "platform",
        "ht",
    ]


def test_the_amd64_level_agrees_with_the_cpu_flags() -> None:
    assert os.uname().machine == "x86_64", "this test reads x86 flags"
    level = level_from_flags(cpu_flags())
    expected = "linux/amd64" + (f"/v{level}" if level > 1 else "")
    assert detect.host_platform() == expected
    assert f"platform:{expected}" in metahub("detect").stdout.splitlines()


def test_the_amd64_level_is_the_generic_target_the_cpu_descends_from() -> None:
    targets = archspec.cpu.TARGETS
    assert detect.host_platform(targets["x86_64"]) == "linux/amd64"
    assert detect.host_platform(targets["nehalem"]) == "linux/amd64/v2"
    assert detect.host_platform(targets["haswell"]) == "linux/amd64/v3"
    assert detect.host_platform(targets["zen3"]) == "linux/amd64/v3"
    assert detect.host_platform(targets["x86_64_v3"]) == "linux/amd64/v3"
    assert detect.host_platform(targets["skylake_avx512"]) == "linux/amd64/v4"
    assert detect.host_platform(targets["sapphirerapids"]) == "linux/amd64/v4"
    assert detect.host_platform(targets["neoverse_v1"]) == "linux/arm64/v8"
    assert detect.host_platform(targets["power9le"]) == "linux/ppc64le"


def test_hyperthreading_agrees_with_cpuinfo_siblings_and_cores() -> None:
    expected = detect.smt_from_cpuinfo(cpuinfo())
    siblings = re.findall(r"^siblings\s*:\s*(\d+)", cpuinfo(), re.MULTILINE)
    cores = re.findall(r"^cpu cores\s*:\s*(\d+)", cpuinfo(), re.MULTILINE)
    assert siblings and cores
    assert expected == ("on" if int(siblings[0]) > int(cores[0]) else "off")
    assert detect.hyperthreading() == expected
    assert f"ht:{expected}" in metahub("detect").stdout.splitlines()


def test_hyperthreading_falls_back_from_sysfs_to_lscpu_to_cpuinfo(tmp_path: Path) -> None:
    active = tmp_path / "active"
    active.write_text("1\n")
    assert detect.hyperthreading(smt_active=active) == "on"
    active.write_text("0\n")
    assert detect.hyperthreading(smt_active=active) == "off"
    missing = tmp_path / "missing"
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, env={"LC_ALL": "C"})
    threads = re.search(r"^Thread\(s\) per core:\s*(\d+)", lscpu.stdout, re.MULTILINE)
    assert threads, lscpu.stdout
    by_lscpu = "on" if int(threads.group(1)) > 1 else "off"
    assert detect.hyperthreading(smt_active=missing) == by_lscpu
    with_smt = tmp_path / "cpuinfo-smt"
    with_smt.write_text("processor\t: 0\nsiblings\t: 16\ncpu cores\t: 8\n")
    assert detect.hyperthreading(missing, with_smt, lscpu="no-such-lscpu") == "on"
    without = tmp_path / "cpuinfo-nosmt"
    without.write_text("processor\t: 0\nsiblings\t: 8\ncpu cores\t: 8\n")
    assert detect.hyperthreading(missing, without, lscpu="no-such-lscpu") == "off"
    arm = tmp_path / "cpuinfo-arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\n")
    assert detect.hyperthreading(missing, arm, lscpu="no-such-lscpu") is None


def test_json_holds_the_same_features_and_the_details() -> None:
    result = metahub("detect", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["features"] == metahub("detect").stdout.splitlines()
    assert report["cpu"] == archspec.cpu.host().name
    assert report["platform"] == detect.host_platform()
    assert report["ht"] in ("on", "off")
    assert report["instType"] is None
    assert report["nvcap"] == [f.split(":")[1] for f in report["features"] if f[:6] == "nvcap:"]
    assert set(report) == {
        "features",
        "cpu",
        "platform",
        "nvcap",
        "driver",
        "cuda",
        "ht",
        "instType",
        "gpus",
        "gpu_source",
        "notes",
    }


def test_without_nvml_or_nvidia_smi_there_is_no_gpu_and_no_error() -> None:
    path = "/usr/bin:/bin"  # no nvidia-smi here
    assert not any(Path(d, "nvidia-smi").exists() for d in path.split(":"))
    result = metahub("detect", "--json", env={"PATH": path})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    if no_nvml():
        assert report["nvcap"] == [] and report["gpus"] == [] and report["gpu_source"] is None
        assert not any(f.startswith("nvcap:") for f in report["features"])
        assert report["notes"][0].startswith("NVML: ")
        assert report["notes"][1] == "nvidia-smi not found"
        assert isinstance(gpu.from_nvml(), str)
    else:  # a GPU machine: NVML answers by itself
        assert report["gpu_source"] == "nvml"
        assert report["nvcap"] == list(gpu.detect_gpus().capabilities)


# -- nvidia-smi output ----------------------------------------------------------------------------

SMI_A100 = "0, NVIDIA A100-SXM4-80GB, 8.0\n"
SMI_MIXED = (
    "0, NVIDIA H100 80GB HBM3, 9.0\n"
    "1, NVIDIA H100 80GB HBM3, 9.0\n"
    "2, NVIDIA GeForce RTX 3090, 8.6\n"
    "3, NVIDIA RTX A6000, 8.6\n"
    "4, Tesla V100-SXM2-32GB, 7.0\n"
)
SMI_NO_DEVICES = "No devices were found\n"
SMI_NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running.\n\n"
)
SMI_OLD_DRIVER = 'Field "compute_cap" is not a valid field to query.\n\n'


def test_parse_one_gpu() -> None:
    assert gpu.parse_smi(SMI_A100) == (gpu.Gpu(0, "NVIDIA A100-SXM4-80GB", "8.0"),)


def test_parse_several_gpus_gives_distinct_capabilities_in_order() -> None:
    gpus = gpu.parse_smi(SMI_MIXED)
    assert [g.index for g in gpus] == [0, 1, 2, 3, 4]
    assert gpus[2].name == "NVIDIA GeForce RTX 3090"
    assert gpu.GpuReport(gpus, "nvidia-smi").capabilities == ("7.0", "8.6", "9.0")
    twelve = gpu.GpuReport((gpu.Gpu(0, "a", "12.0"), gpu.Gpu(1, "b", "9.0")), "nvml")
    assert twelve.capabilities == ("9.0", "12.0")  # numerically, not as text


def test_parse_no_devices_is_no_gpu() -> None:
    assert gpu.parse_smi(SMI_NO_DEVICES, returncode=6) == ()


@pytest.mark.parametrize(
    ("output", "returncode", "says"),
    [
        (SMI_NO_DRIVER, 9, "NVIDIA-SMI has failed because it couldn't communicate"),
        (SMI_OLD_DRIVER, 2, 'Field "compute_cap" is not a valid field to query.'),
        ("0, NVIDIA Graphics Device, [N/A]\n", 0, "reports compute capability '[N/A]'"),
        ("", 255, "nvidia-smi exited with 255"),
    ],
)
def test_parse_errors_say_what_nvidia_smi_said(output: str, returncode: int, says: str) -> None:
    with pytest.raises(gpu.SmiError) as error:
        gpu.parse_smi(output, returncode)
    assert says in str(error.value)


def fake_smi(directory: Path, output: str, returncode: int = 0) -> Path:
    """An `nvidia-smi` that prints a given answer, and records how it was called."""
    directory.mkdir(exist_ok=True)
    (directory / "answer").write_text(output)
    script = directory / "nvidia-smi"
    script.write_text(
        f'#!/bin/sh\necho "$@" > "{directory}/args"\ncat "{directory}/answer"\nexit {returncode}\n'
    )
    script.chmod(0o755)
    return script


def test_nvidia_smi_is_asked_for_index_name_and_compute_cap(tmp_path: Path) -> None:
    script = fake_smi(tmp_path / "bin", SMI_MIXED)
    assert gpu.from_smi(str(script)) == gpu.parse_smi(SMI_MIXED)
    args = (tmp_path / "bin" / "args").read_text().split()
    assert args == ["--query-gpu=index,name,compute_cap", "--format=csv,noheader"]
    failing = fake_smi(tmp_path / "broken", SMI_NO_DRIVER, returncode=9)
    reason = gpu.from_smi(str(failing))
    assert isinstance(reason, str) and "couldn't communicate with the NVIDIA driver" in reason
    assert gpu.from_smi(str(tmp_path / "absent")) == f"{tmp_path / 'absent'} not found"


def test_detect_reports_nvidia_smi_s_gpus_when_nvml_is_missing(tmp_path: Path) -> None:
    fake_smi(tmp_path / "bin", SMI_MIXED)
    result = metahub("detect", env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    nvcaps = [line for line in result.stdout.splitlines() if line.startswith("nvcap:")]
    if no_nvml():
        assert nvcaps == ["nvcap:7.0", "nvcap:8.6", "nvcap:9.0"]
        report = json.loads(
            metahub("detect", "--json", env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}).stdout
        )
        assert report["gpu_source"] == "nvidia-smi"
        assert report["gpus"][4] == {
            "index": 4,
            "name": "Tesla V100-SXM2-32GB",
            "capability": "7.0",
        }
    else:
        assert nvcaps == [f"nvcap:{c}" for c in gpu.detect_gpus().capabilities]


def test_detect_with_no_devices_has_no_nvcap(tmp_path: Path) -> None:
    fake_smi(tmp_path / "bin", SMI_NO_DEVICES, returncode=6)
    result = metahub("detect", env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    if no_nvml():
        assert not [line for line in result.stdout.splitlines() if line.startswith("nvcap:")]


# -- cloud metadata -------------------------------------------------------------------------------


class MetadataServer(ThreadingHTTPServer):
    flavor = "ec2"  # which cloud's metadata service it plays
    requests: list[tuple[str, str]]


class Metadata(BaseHTTPRequestHandler):
    """Answers as the cloud named by the server's `flavor`; records every request."""

    server: MetadataServer

    def _answer(self, status: int, body: str = "") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self) -> None:
        server = self.server
        server.requests.append(("PUT", self.path))
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        if server.flavor == "ec2" and self.path == "/latest/api/token" and ttl:
            self._answer(200, "AQAEAIMDSv2-token==")
        else:
            self._answer(405)

    def do_GET(self) -> None:
        server = self.server
        server.requests.append(("GET", self.path))
        flavor = server.flavor
        if flavor == "ec2" and self.path == "/latest/meta-data/instance-type":
            if self.headers.get("X-aws-ec2-metadata-token") != "AQAEAIMDSv2-token==":
                self._answer(401)
            else:
                self._answer(200, "c5.9xlarge")
        elif flavor == "gce" and self.path == "/computeMetadata/v1/instance/machine-type":
            if self.headers.get("Metadata-Flavor") != "Google":
                self._answer(403)
            else:
                self._answer(200, "projects/123456789/machineTypes/n2-standard-8")
        elif flavor == "azure" and self.path.startswith("/metadata/instance/compute/vmSize?"):
            if self.headers.get("Metadata") != "true":
                self._answer(400)
            else:
                self._answer(200, "Standard_HB120rs_v3")
        else:
            self._answer(404, "<html>not here</html>")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def metadata() -> Iterator[MetadataServer]:
    server = MetadataServer(("127.0.0.1", 0), Metadata)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def url(server: MetadataServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_ec2_imdsv2_token_then_instance_type(metadata: MetadataServer) -> None:
    assert cloud.ec2(url(metadata)) == "c5.9xlarge"
    assert metadata.requests == [
        ("PUT", "/latest/api/token"),
        ("GET", "/latest/meta-data/instance-type"),
    ]
    metadata.flavor = "gce"
    assert cloud.ec2(url(metadata)) is None


def test_gce_and_azure(metadata: MetadataServer) -> None:
    metadata.flavor = "gce"
    assert cloud.gce(url(metadata)) == "n2-standard-8"
    assert cloud.azure(url(metadata)) is None
    metadata.flavor = "azure"
    assert cloud.azure(url(metadata)) == "Standard_HB120rs_v3"
    assert cloud.gce(url(metadata)) is None


def test_a_silent_metadata_service_costs_half_a_second() -> None:
    import socket

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        assert cloud.ec2(f"http://127.0.0.1:{silent.getsockname()[1]}") is None
        assert time.monotonic() - started < 1.5


def test_detect_asks_the_cloud_only_with_cloud(metadata: MetadataServer) -> None:
    env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": url(metadata)}
    plain = metahub("detect", env=env)
    assert plain.returncode == 0, plain.stderr
    assert not [line for line in plain.stdout.splitlines() if line.startswith("instType:")]
    assert metadata.requests == []
    asked = metahub("detect", "--cloud", env=env)
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.splitlines()[-1] == "instType:c5.9xlarge"
    report = json.loads(metahub("detect", "--cloud", "--json", env=env).stdout)
    assert report["instType"] == "c5.9xlarge"
    assert report["features"][-1] == "instType:c5.9xlarge"


def test_the_first_cloud_to_answer_in_order_wins(metadata: MetadataServer) -> None:
    here = url(metadata)
    endpoints = {"ec2": here, "gce": here, "azure": here}
    for flavor, expected in [
        ("ec2", "c5.9xlarge"),
        ("gce", "n2-standard-8"),
        ("azure", "Standard_HB120rs_v3"),
        ("none", None),
    ]:
        metadata.flavor = flavor
        assert cloud.instance_type(endpoints=endpoints) == expected

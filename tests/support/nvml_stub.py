"""A stand-in for the driver's libnvidia-ml.so.1, compiled with gcc at test time.

It exports the NVML functions `metahub detect` calls, with NVML's C signatures, so the test
goes through the same ctypes boundary as on a GPU machine. What it answers is read from the
environment at each call (so one build serves every case, in process or in a `metahub detect`
subprocess):

- `STUB_NVML_DRIVER` (default `535.104.05`), `STUB_NVML_CUDA` (NVML's integer, default 12020);
- `STUB_NVML_DEVICES`: `name=major.minor` separated by `;` (default none);
- `STUB_NVML_FAIL`: a function name that returns `STUB_NVML_STATUS` (default 9, NVML's
  "Driver Not Loaded"), which `nvmlErrorString` words as NVML does.

`build(..., cuda_v2=False)` leaves nvmlSystemGetCudaDriverVersion_v2 out, as older drivers do.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;
typedef struct { int index; } device_t;
typedef device_t *nvmlDevice_t;

static device_t devices[16];

static nvmlReturn_t status_of(const char *function) {
    const char *fail = getenv("STUB_NVML_FAIL");
    if (fail != NULL && strcmp(fail, function) == 0) {
        const char *status = getenv("STUB_NVML_STATUS");
        return status ? atoi(status) : 9;
    }
    return 0;
}

static const char *env_or(const char *name, const char *fallback) {
    const char *value = getenv(name);
    return value ? value : fallback;
}

/* Device `index` of the `;`-separated list (copied, so strtok may cut it); -1 if none. */
static int device_field(unsigned int index, char *name, unsigned int length,
                        int *major, int *minor) {
    char list[1024];
    snprintf(list, sizeof list, "%s", env_or("STUB_NVML_DEVICES", ""));
    unsigned int i = 0;
    for (char *item = strtok(list, ";"); item != NULL; item = strtok(NULL, ";"), i++) {
        if (i != index) continue;
        char *equals = strchr(item, '=');
        if (equals == NULL) return -1;
        *equals = '\0';
        if (name != NULL) snprintf(name, length, "%s", item);
        if (major != NULL && sscanf(equals + 1, "%d.%d", major, minor) != 2) return -1;
        return 0;
    }
    return -1;
}

static unsigned int device_count(void) {
    const char *list = env_or("STUB_NVML_DEVICES", "");
    unsigned int count = 0;
    if (*list == '\0') return 0;
    for (const char *p = list; *p; p++) if (*p == ';') count++;
    return count + 1;
}

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case 0: return "Success";
    case 3: return "Not Supported";
    case 9: return "Driver Not Loaded";
    case 999: return "Unknown Error";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlInit_v2(void) { return status_of("nvmlInit_v2"); }
nvmlReturn_t nvmlShutdown(void) { return status_of("nvmlShutdown"); }

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    nvmlReturn_t status = status_of("nvmlSystemGetDriverVersion");
    if (status == 0) snprintf(version, length, "%s", env_or("STUB_NVML_DRIVER", "535.104.05"));
    return status;
}

#ifdef WITH_CUDA_V2
nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *version) {
    nvmlReturn_t status = status_of("nvmlSystemGetCudaDriverVersion_v2");
    if (status == 0) *version = atoi(env_or("STUB_NVML_CUDA", "12020"));
    return status;
}
#endif

nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *version) {
    nvmlReturn_t status = status_of("nvmlSystemGetCudaDriverVersion");
    if (status == 0) *version = atoi(env_or("STUB_NVML_CUDA", "12020"));
    return status;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    nvmlReturn_t status = status_of("nvmlDeviceGetCount_v2");
    if (status == 0) *count = device_count();
    return status;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    nvmlReturn_t status = status_of("nvmlDeviceGetHandleByIndex_v2");
    if (status != 0) return status;
    if (index >= device_count() || index >= 16) return 2; /* NVML_ERROR_INVALID_ARGUMENT */
    devices[index].index = (int)index;
    *device = &devices[index];
    return 0;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    nvmlReturn_t status = status_of("nvmlDeviceGetName");
    if (status != 0) return status;
    return device_field((unsigned int)device->index, name, length, NULL, NULL) ? 999 : 0;
}

nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major, int *minor) {
    nvmlReturn_t status = status_of("nvmlDeviceGetCudaComputeCapability");
    if (status != 0) return status;
    return device_field((unsigned int)device->index, NULL, 0, major, minor) ? 999 : 0;
}
"""


def build(directory: Path, *, cuda_v2: bool = True) -> Path:
    """Compile the stub into `directory` and return the shared library's path."""
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / "nvml_stub.c"
    source.write_text(SOURCE)
    library = directory / ("libnvidia-ml.so.1" if cuda_v2 else "libnvidia-ml-old.so.1")
    command = ["gcc", "-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o", str(library)]
    if cuda_v2:
        command.append("-DWITH_CUDA_V2")
    subprocess.run([*command, str(source)], check=True, capture_output=True, text=True)
    return library

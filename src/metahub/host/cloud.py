"""The cloud instance type, from the instance metadata service: only when asked for.

EC2 (IMDSv2: a session token, then the instance type), GCE and Azure are asked at once, each
with a short timeout, so a host outside any cloud waits about half a second. Proxies are never
used for the link-local metadata address. The endpoints honour the variables the clouds' own
SDKs read: AWS_EC2_METADATA_SERVICE_ENDPOINT, AWS_EC2_METADATA_DISABLED, GCE_METADATA_HOST.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait

TIMEOUT = 0.5
METADATA_ADDRESS = "169.254.169.254"
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _fetch(
    url: str, headers: dict[str, str], method: str = "GET", timeout: float = TIMEOUT
) -> str | None:
    request = urllib.request.Request(url, headers=headers, method=method)
    try:
        with _opener.open(request, timeout=timeout) as response:
            if response.status != 200:
                return None
            text = bytes(response.read(4096)).decode("utf-8", "replace").strip()
    except (OSError, urllib.error.URLError, ValueError):
        return None
    # An instance type is one short token; anything else is some other service answering.
    if not text or len(text) > 128 or any(c.isspace() for c in text):
        return None
    return text


def ec2(endpoint: str | None = None, timeout: float = TIMEOUT) -> str | None:
    if os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
        return None
    base = (
        endpoint
        or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        or f"http://{METADATA_ADDRESS}"
    ).rstrip("/")
    token = _fetch(
        f"{base}/latest/api/token",
        {"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        method="PUT",
        timeout=timeout,
    )
    if token is None:
        return None
    return _fetch(
        f"{base}/latest/meta-data/instance-type",
        {"X-aws-ec2-metadata-token": token},
        timeout=timeout,
    )


def gce(endpoint: str | None = None, timeout: float = TIMEOUT) -> str | None:
    if endpoint is None:
        endpoint = f"http://{os.environ.get('GCE_METADATA_HOST') or METADATA_ADDRESS}"
    answer = _fetch(
        f"{endpoint.rstrip('/')}/computeMetadata/v1/instance/machine-type",
        {"Metadata-Flavor": "Google"},
        timeout=timeout,
    )
    # projects/123456/machineTypes/n2-standard-8
    return answer.rsplit("/", 1)[-1] if answer else None


def azure(endpoint: str | None = None, timeout: float = TIMEOUT) -> str | None:
    base = (endpoint or f"http://{METADATA_ADDRESS}").rstrip("/")
    return _fetch(
        f"{base}/metadata/instance/compute/vmSize?api-version=2021-02-01&format=text",
        {"Metadata": "true"},
        timeout=timeout,
    )


PROVIDERS: dict[str, Callable[[str | None, float], str | None]] = {
    "ec2": ec2,
    "gce": gce,
    "azure": azure,
}


def instance_type(
    timeout: float = TIMEOUT, endpoints: Mapping[str, str | None] | None = None
) -> str | None:
    """The first provider's answer (EC2, then GCE, then Azure), or None outside any cloud.

    `endpoints` replaces a provider's metadata URL, by provider name.
    """
    endpoints = endpoints or {}
    with ThreadPoolExecutor(len(PROVIDERS)) as pool:
        futures = [
            pool.submit(provider, endpoints.get(name), timeout)
            for name, provider in PROVIDERS.items()
        ]
        wait(futures, timeout=3 * timeout)
        for future in futures:
            answer = future.result() if future.done() and future.exception() is None else None
            if answer:
                return answer
    return None

"""`metahub-credential-provider`: kubelet's image credential provider for MetaHub.

kubelet runs the plugin named in its `CredentialProviderConfig` for each image it matches and
has no cached login for (KEP-2133, `credentialprovider.kubelet.k8s.io/v1` and `v1beta1`): a
`CredentialProviderRequest` on stdin, a `CredentialProviderResponse` on stdout. The answer is
keyed by the image's registry host with `cacheKeyType: Registry`, so kubelet asks again only
when its cache for that registry runs out.

The login is this node's profile login (`--account`: the account and the features `metahub
detect` finds, cached on disk, so only the first call on a boot detects anything) or a machine
type's credential (`--login`). Start-up is kept short: only the standard library and orjson are
imported, and the detection code only when there is no cache.

Bad input ends with one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import orjson

PROG = "metahub-credential-provider"
API_VERSIONS = ("credentialprovider.kubelet.k8s.io/v1", "credentialprovider.kubelet.k8s.io/v1beta1")
REQUEST_KIND = "CredentialProviderRequest"
RESPONSE_KIND = "CredentialProviderResponse"
DEFAULT_CACHE_FILE = Path("/var/cache/metahub/credential-provider.json")
DEFAULT_CACHE_DURATION = "1h"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
DOCKER_HUB = "docker.io"
MAX_REQUEST = 1 << 20
# A Go duration, as kubelet parses `cacheDuration`: 90s, 5m, 1h30m, 1.5h.
_DURATION_RE = re.compile(r"([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+\Z")


class ProviderError(Exception):
    """What is wrong, in one line for kubelet's log."""


@dataclass(frozen=True, slots=True)
class Request:
    api_version: str
    image: str


def parse_request(data: bytes) -> Request:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProviderError(f"the request on stdin is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ProviderError("the request on stdin is not a JSON object")
    kind = document.get("kind")
    if kind != REQUEST_KIND:
        raise ProviderError(f"expected kind {REQUEST_KIND!r}, got {kind!r}")
    api_version = document.get("apiVersion")
    if api_version not in API_VERSIONS:
        raise ProviderError(
            f"unsupported apiVersion {api_version!r}; this plugin speaks {', '.join(API_VERSIONS)}"
        )
    image = document.get("image")
    if not isinstance(image, str) or not image.strip():
        raise ProviderError("the request names no image")
    return Request(api_version, image.strip())


def registry_of(image: str) -> str:
    """The registry host an image reference names: `ghcr.io/a/b:1` -> `ghcr.io`; `nginx` and
    `library/nginx` -> `docker.io` (a first component without `.` or `:`, other than
    `localhost`, is a Docker Hub path)."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        host = first.lower()
        return DOCKER_HUB if host in ("index.docker.io", "registry-1.docker.io") else host
    return DOCKER_HUB


def response(request: Request, username: str, password: str, cache_duration: str) -> bytes:
    return orjson.dumps(
        {
            "apiVersion": request.api_version,
            "kind": RESPONSE_KIND,
            "cacheKeyType": "Registry",
            "cacheDuration": cache_duration,
            "auth": {registry_of(request.image): {"username": username, "password": password}},
        }
    )


def read_password(path: Path) -> str:
    try:
        password = path.read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ProviderError(f"cannot read the password file {path}: {reason}") from exc
    if not password:
        raise ProviderError(f"the password file {path} is empty")
    return password


def _boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def node_features(cache_file: Path) -> list[str]:
    """This node's features as `metahub detect` prints them, detected once per boot."""
    boot = _boot_id()
    try:
        cached = orjson.loads(cache_file.read_bytes())
        if (
            isinstance(cached, dict)
            and boot
            and cached.get("boot_id") == boot
            and isinstance(cached.get("features"), list)
            and all(isinstance(f, str) for f in cached["features"])
        ):
            return list(cached["features"])
    except (OSError, orjson.JSONDecodeError):
        pass  # no cache yet, or a damaged one: detect and write it anew
    from metahub.host.detect import detect  # archspec and the GPU probes: only when needed

    features = detect().features
    _write_cache(cache_file, {"boot_id": boot, "features": features})
    return features


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    """Best effort: a cache that cannot be written only makes the next call detect again."""
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temp.write_bytes(orjson.dumps(data))
        os.replace(temp, path)
    except OSError:
        with contextlib.suppress(OSError):
            temp.unlink()


def username(args: argparse.Namespace) -> str:
    if args.login is not None:
        return str(args.login)
    from metahub.host.profile_names import LoginError, profile_login

    if args.features is not None:
        features = [f.strip() for f in args.features.split(",") if f.strip()]
    else:
        features = node_features(args.cache_file)
    try:
        return profile_login(args.account, features, args.skip)
    except LoginError as exc:
        raise ProviderError(str(exc)) from exc


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        _fail(message)


def parser() -> argparse.ArgumentParser:
    parse = _Parser(
        prog=PROG,
        description="kubelet image credential provider: logs this node in to MetaHub.",
    )
    who = parse.add_mutually_exclusive_group(required=True)
    who.add_argument("--account", help="a profile login of this account and this node's features")
    who.add_argument("--login", help="a machine type's credential")
    parse.add_argument("--password-file", type=Path, required=True, help="the password, alone")
    parse.add_argument(
        "--features",
        help="comma-separated key:value features instead of detecting them (with --account)",
    )
    parse.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="KEY",
        help="leave a detected feature key out of the profile login (repeatable), e.g. ht",
    )
    parse.add_argument(
        "--cache-file",
        type=Path,
        default=DEFAULT_CACHE_FILE,
        help=f"where detected features are kept until the next boot (default {DEFAULT_CACHE_FILE})",
    )
    parse.add_argument(
        "--cache-duration",
        default=DEFAULT_CACHE_DURATION,
        help=f"how long kubelet keeps the answer, a Go duration (default {DEFAULT_CACHE_DURATION})",
    )
    return parse


def run(argv: Sequence[str], stdin: bytes) -> bytes:
    args = parser().parse_args(argv)
    if args.account is not None and ("/" in args.account or ":" in args.account):
        raise ProviderError("--account is the account's name alone, e.g. hpc")
    if args.login is not None and (args.features is not None or args.skip):
        raise ProviderError("--features and --skip make a profile login: use them with --account")
    if not _DURATION_RE.match(args.cache_duration):
        raise ProviderError(
            f"--cache-duration {args.cache_duration!r} is not a duration such as 90s, 5m or 1h"
        )
    if len(stdin) > MAX_REQUEST:
        raise ProviderError("the request on stdin is larger than 1 MiB")
    request = parse_request(stdin)
    password = read_password(args.password_file)
    return response(request, username(args), password, args.cache_duration)


def _fail(message: str) -> NoReturn:
    sys.stderr.write(f"{PROG}: {message}\n")
    raise SystemExit(1)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        answer = run(sys.argv[1:] if argv is None else argv, sys.stdin.buffer.read(MAX_REQUEST + 1))
    except ProviderError as exc:
        _fail(str(exc))
    except Exception as exc:  # never a traceback in kubelet's log: one line that says what
        _fail(f"{type(exc).__name__}: {exc}")
    sys.stdout.buffer.write(answer + b"\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

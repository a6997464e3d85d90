"""The pull side of the OCI distribution API v1.1 under `/v2/`."""

from __future__ import annotations

import contextlib
import re
from typing import Any
from urllib.parse import quote

import orjson

from metahub import errors
from metahub.cache.lru import remember
from metahub.features.selection import MachineProfile
from metahub.hub import Hub
from metahub.oci import mediatypes
from metahub.oci.reference import checked_digest, checked_name, checked_reference
from metahub.server.accesslog import UPSTREAM_SCOPE_KEY
from metahub.server.authn import authenticate, authorize, bearer_principal, is_bearer
from metahub.server.http import ZEROCOPY, Request, Response, StreamResponse
from metahub.serving.manifests import ServedManifest
from metahub.upstream.base import ByteRange

# Names contain slashes, so a route is recognised by what follows the name.
_ROUTES = (
    re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs|referrers)/(?P<ref>[^/]+)$"),
    re.compile(r"^/v2/(?P<name>.+)/(?P<kind>tags)/list$"),
    re.compile(r"^/v2/(?P<name>.+?)/blobs/(?P<kind>uploads)(?:/.*)?$"),
)
_JSON = {"content-type": "application/json"}
# Responses of the warm shortcut, by the answer they carry (held, so its id stays its own).
RESPONSE_ENTRIES = 1024
_RESPONSES: dict[int, tuple[ServedManifest, Response]] = {}
_DIGITS = re.compile(r"[0-9]+")
READ_METHODS = ("GET", "HEAD")
STALE_WARNING = '110 metahub "Response is Stale"'
# The Accept cache holds at most this many headers of at most this many characters each.
ACCEPT_CACHE_ENTRIES = 256
ACCEPT_CACHE_KEY_LIMIT = 1024
_ACCEPT_ANSWERS: dict[str | None, bool] = {}
# The manifest paths of the warm shortcut, checked: at most this many of at most this length.
MANIFEST_PATH_ENTRIES = 1024
MANIFEST_PATH_KEY_LIMIT = 512
_MANIFEST_PATHS: dict[str, tuple[str, str] | None] = {}


async def registry_endpoint(request: Request, hub: Hub) -> Response | StreamResponse:
    if request.path in ("/v2/", "/v2"):
        await authenticate(request, hub, None)
        if request.method not in READ_METHODS:
            raise _read_only(request)
        return Response(200, _JSON, b"{}")
    name, kind, reference = _route(request.path)
    # Before authentication: an `ns` this MetaHub does not mirror is a 404 at once, so that
    # containerd moves on to its next host.
    route = hub.router.route(name, request.param("ns"))
    request.scope[UPSTREAM_SCOPE_KEY] = route.registry  # for metrics and the access log
    # Tokens grant the name as the client sent it (the one in its scope).
    principal = await authenticate(request, hub, name)
    if request.method not in READ_METHODS or kind == "uploads":
        raise _read_only(request)
    profile = authorize(request, hub, principal, name, route)
    key = route.key
    if kind == "manifests":
        reference = checked_reference(reference)
        return await _manifest(request, hub, profile, key, reference)
    if kind == "tags":
        return await _tags_list(request, hub, name, key)
    if kind == "blobs":
        return await _blob(request, hub, key, checked_digest(reference))
    return await _referrers(request, hub, key, checked_digest(reference))


def manifest_from_memory(request: Request, hub: Hub) -> Response | None:
    """The answer registry_endpoint would give a manifest GET or HEAD with a Bearer token, when
    memory alone gives it (a valid token, a fresh tag or known digest, its filtered index made);
    None otherwise, errors included: registry_endpoint answers those, as ever.

    Synchronous: the HTTP protocol answers with it before any ASGI round (server/protocol.py).
    """
    if request.method not in READ_METHODS:
        return None
    manifest = _manifest_path(request.path)
    header = request.header(b"authorization") or ""
    if manifest is None or not is_bearer(header):
        return None
    name, reference = manifest
    try:
        route = hub.router.route(name, request.param("ns"))
        principal = bearer_principal(request, hub, name, header)
        profile = authorize(request, hub, principal, name, route)
    except errors.RegistryError:
        return None
    accepts_index = _accepts_index(request.header(b"accept"))
    served = hub.manifests.from_memory(route.key, reference, profile, accepts_index=accepts_index)
    if served is None:
        return None
    request.scope[UPSTREAM_SCOPE_KEY] = route.registry  # for the access log, as registry_endpoint
    return _remembered_response(served)


def _manifest_path(path: str) -> tuple[str, str] | None:
    """The checked name and reference of a manifest path; None for any other path or one that
    fails a check. A warm pull sends the same few paths again and again: short ones are
    matched and checked once."""
    try:
        return _MANIFEST_PATHS[path]
    except KeyError:
        pass
    match = _ROUTES[0].match(path)
    answer: tuple[str, str] | None = None
    if match is not None and match["kind"] == "manifests":
        with contextlib.suppress(errors.RegistryError):  # the full path answers the error
            answer = checked_name(match["name"]), checked_reference(match["ref"])
    if len(path) <= MANIFEST_PATH_KEY_LIMIT:
        remember(_MANIFEST_PATHS, path, answer, MANIFEST_PATH_ENTRIES)
    return answer


def _route(path: str) -> tuple[str, str, str]:
    for pattern in _ROUTES:
        match = pattern.match(path)
        if match is not None:
            groups = match.groupdict()
            return checked_name(groups["name"]), groups["kind"], groups.get("ref") or ""
    raise errors.NotFound(f"no registry API route for {path}")


async def _manifest(
    request: Request, hub: Hub, profile: MachineProfile | None, name: str, reference: str
) -> Response:
    served = await hub.manifests.get(
        name, reference, profile, accepts_index=_accepts_index(request.headers.get("accept"))
    )
    return _manifest_response(served)


def _remembered_response(served: ServedManifest) -> Response:
    """`_manifest_response`, made once for each answer memory holds (the filtered index of a
    warm tag is the same object on every pull), so the shortcut also writes it only once a
    second (protocol.rendered)."""
    known = _RESPONSES.get(id(served))
    if known is not None and known[0] is served:
        return known[1]
    if len(_RESPONSES) >= RESPONSE_ENTRIES:
        _RESPONSES.clear()
    response = _RESPONSES[id(served)] = (served, _manifest_response(served))
    return response[1]


def _manifest_response(served: ServedManifest) -> Response:
    digest = served.digest.encode("latin-1")
    headers = [
        (b"content-type", served.media_type.encode("latin-1")),
        (b"docker-content-digest", digest),
        (b"etag", b'"%s"' % digest),
    ]
    if served.stale:
        headers.append((b"warning", STALE_WARNING.encode("latin-1")))
    return Response(200, raw_headers=headers, body=served.data)


def _accepts_index(accept: str | None) -> bool:
    """Clients send the same few Accept headers again and again: each short one is parsed once.

    A long one is parsed every time (cheap next to the request itself): keyed on raw headers,
    the cache held whatever a client sent, and distinct 60 KiB headers filled memory.
    """
    known = _ACCEPT_ANSWERS.get(accept)
    if known is not None:
        return known
    answer = mediatypes.accepts_index(accept)
    if accept is None or len(accept) <= ACCEPT_CACHE_KEY_LIMIT:
        remember(_ACCEPT_ANSWERS, accept, answer, ACCEPT_CACHE_ENTRIES)
    return answer


async def _blob(request: Request, hub: Hub, name: str, digest: str) -> Response | StreamResponse:
    byte_range = ByteRange.parse(request.headers.get("range"))
    if request.method == "HEAD" and byte_range is None:
        size, media_type = await hub.blobs.size(name, digest)
        headers = _blob_headers(digest, media_type)
        return StreamResponse(200, headers, size, _nothing())
    stream = await hub.blobs.open(name, digest, byte_range)
    if stream.location is not None:  # `blobs.redirect: pass`: the client fetches the bytes
        redirect = {"location": stream.location, "docker-content-digest": digest}
        return Response(307, redirect)
    headers = _blob_headers(digest, stream.media_type)
    status = 200
    if stream.content_range is not None:
        first, last = stream.content_range
        headers["content-range"] = f"bytes {first}-{last}/{stream.size}"
        status = 206
    response = StreamResponse(status, headers, stream.length, stream.chunks)
    if stream.file is not None and ZEROCOPY in request.scope.get("extensions", {}):
        response.file = stream.file
        response.offset = stream.content_range[0] if stream.content_range else 0
    return response


def _blob_headers(digest: str, media_type: str) -> dict[str, str]:
    return {
        "content-type": media_type,
        "docker-content-digest": digest,
        "etag": f'"{digest}"',
        "accept-ranges": "bytes",
        "cache-control": "max-age=31536000",
    }


async def _nothing() -> Any:
    return
    yield b""


async def _tags_list(request: Request, hub: Hub, name: str, key: str) -> Response:
    n_text, last = request.param("n"), request.param("last")
    limit: int | None = None
    if n_text is not None and n_text != "":
        if not _DIGITS.fullmatch(n_text):
            raise errors.PaginationInvalid(f"n must be a non-negative integer, not {n_text!r}")
        # More digits than any count of tags: as good as no limit (and int() refuses 4,300+).
        significant = n_text.lstrip("0") or "0"
        limit = int(significant) if len(significant) <= 18 else None
    tags = sorted(set(await hub.upstream.tags(key)))
    if last:
        tags = [tag for tag in tags if tag > last]
    headers = dict(_JSON)
    if limit is not None and len(tags) > limit:
        tags = tags[:limit]
        if tags:
            link = f"/v2/{name}/tags/list?n={limit}&last={quote(tags[-1])}"
            ns = request.param("ns")
            if ns:
                link += f"&ns={quote(ns, safe='')}"  # the next page goes to the same registry
            headers["link"] = f'<{link}>; rel="next"'
    return Response(200, headers, orjson.dumps({"name": name, "tags": tags}))


async def _referrers(request: Request, hub: Hub, name: str, digest: str) -> Response:
    artifact_type = request.param("artifactType")
    referrers = await hub.upstream.referrers(name, digest, artifact_type)
    headers = {"content-type": mediatypes.OCI_INDEX}
    data = referrers.data
    if artifact_type:
        if referrers.filters_applied is None:
            document = orjson.loads(data)
            document["manifests"] = [
                d for d in document.get("manifests") or [] if d.get("artifactType") == artifact_type
            ]
            data = orjson.dumps(document)
        headers["oci-filters-applied"] = "artifactType"
    return Response(200, headers, data)


def _read_only(request: Request) -> errors.RegistryError:
    return errors.Unsupported(
        f"{request.method} is not supported: MetaHub is a read-only proxy; push to the upstream"
    )

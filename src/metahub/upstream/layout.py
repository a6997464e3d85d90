"""A local OCI image layout served read-only: the embedded default the demo uses.

Two shapes are understood. One layout for many repositories, whose `index.json` entries carry
full references (`qnib/bench:latest`) in `org.opencontainers.image.ref.name`; or one layout per
repository at `<path>/<name>/`, whose ref names are bare tags (what `skopeo copy oci:` writes).

Every file is read only where it lies inside the configured path, links followed: a blob file
that links to `/etc/passwd` is a blob this upstream does not have.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import orjson

from metahub import errors
from metahub.fileio import OutsideRoot, open_within, read_chunks, read_within
from metahub.oci import mediatypes
from metahub.oci.digest import Digest, InvalidDigest
from metahub.oci.reference import NAME_RE, TAG_RE
from metahub.upstream.base import BlobStream, ByteRange, Manifest, ManifestHead, Referrers

T = TypeVar("T")

REF_NAME = "org.opencontainers.image.ref.name"

log = logging.getLogger("metahub.upstream.layout")


@dataclass(frozen=True, slots=True)
class _Layout:
    root: Path
    tags: dict[str, dict[str, dict[str, object]]]  # repository -> tag -> descriptor


class OciLayoutUpstream:
    def __init__(self, path: Path, *, registry: str | None = None) -> None:
        """`registry`: its name as one of several upstreams, for messages."""
        self.path = path
        self.description = f"OCI layout {path}"
        if registry is not None:
            self.description = f"upstream {registry} ({self.description})"
        self._cache: dict[Path, tuple[tuple[int, int, int], _Layout]] = {}

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        if not (self.path / "index.json").is_file() and not self.path.is_dir():
            raise errors.UpstreamUnavailable(f"{self.description} does not exist")

    def _load(self, root: Path, bare_tags_for: str | None) -> _Layout | None:
        index_file = root / "index.json"
        try:
            stat = index_file.stat()
        except OSError:
            return None
        # The inode and size too: a quick rewrite can keep a coarse filesystem's mtime.
        version = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        cached = self._cache.get(root)
        if cached and cached[0] == version:
            return cached[1]
        try:
            document = orjson.loads(self._read(index_file))
        except (OSError, orjson.JSONDecodeError) as exc:
            raise errors.UpstreamError(
                f"{self.description}: unreadable {index_file}: {exc}"
            ) from exc
        manifests = document.get("manifests") if isinstance(document, dict) else None
        if not isinstance(manifests, list) or not all(isinstance(d, dict) for d in manifests):
            raise errors.UpstreamError(f"{self.description}: {index_file} is not an image index")
        tags: dict[str, dict[str, dict[str, object]]] = {}
        for descriptor in manifests:
            annotations = descriptor.get("annotations")
            ref = annotations.get(REF_NAME) if isinstance(annotations, dict) else None
            if not isinstance(ref, str):
                continue
            name, tag = _split_ref(ref, bare_tags_for)
            if name is not None and tag is not None:
                tags.setdefault(name, {})[tag] = descriptor
        layout = _Layout(root, tags)
        self._cache[root] = (version, layout)
        return layout

    def _layout_for(self, name: str) -> _Layout:
        per_repo = self.path / name
        if (per_repo / "oci-layout").is_file():
            layout = self._load(per_repo, bare_tags_for=name)
            if layout is not None:
                return layout
        layout = self._load(self.path, bare_tags_for=None)
        if layout is None or name not in layout.tags:
            raise errors.NameUnknown(
                f"repository {name} is not in {self.description}", detail={"name": name}
            )
        return layout

    def _blob_path(self, layout: _Layout, digest: str) -> Path:
        try:
            parsed = Digest.parse(digest)
        except InvalidDigest as exc:  # a descriptor in the layout names no blob it could hold
            raise errors.UpstreamError(f"{self.description}: {exc}") from exc
        return layout.root / "blobs" / parsed.algorithm / parsed.hex

    async def get_manifest(self, name: str, reference: str) -> Manifest:
        layout = self._layout_for(name)
        if ":" in reference:
            digest = reference
            media_type = None
        else:
            descriptor = layout.tags.get(name, {}).get(reference)
            if descriptor is None:
                raise errors.ManifestUnknown(
                    f"manifest {name}:{reference} is not in {self.description}",
                    detail={"name": name, "reference": reference},
                )
            digest = str(descriptor.get("digest"))
            media_type = descriptor.get("mediaType")
        try:
            data = await asyncio.to_thread(self._read, self._blob_path(layout, digest))
        except (FileNotFoundError, OutsideRoot) as exc:
            raise errors.ManifestUnknown(
                f"manifest {name}@{digest} is not in {self.description}",
                detail={"name": name, "reference": reference},
            ) from exc
        if str(Digest.of(data, Digest.parse(digest).algorithm)) != digest:
            raise errors.UpstreamError(f"{self.description}: blob {digest} is corrupt")
        if not isinstance(media_type, str) or not _header_safe(media_type):
            media_type = _declared_media_type(data)
        if media_type is None:  # a layer or config blob: not something to pull as a manifest
            raise errors.ManifestUnknown(
                f"{digest} in {self.description} is not a manifest",
                detail={"name": name, "reference": reference},
            )
        return Manifest(data, media_type, digest)

    async def head_manifest(self, name: str, reference: str) -> ManifestHead | None:
        manifest = await self.get_manifest(name, reference)
        return ManifestHead(manifest.digest, manifest.media_type, len(manifest.data))

    async def blob_size(self, name: str, digest: str) -> tuple[int, str]:
        _, size = self._existing_blob(name, digest)
        return size, "application/octet-stream"

    async def open_blob(
        self,
        name: str,
        digest: str,
        byte_range: ByteRange | None = None,
        *,
        pass_redirect: bool = False,
    ) -> BlobStream:
        path, size = self._existing_blob(name, digest)
        window = byte_range.resolve(size) if byte_range else None
        first, last = window if window else (0, size - 1)
        chunks = read_chunks(path, first, last - first + 1, root=self.path)
        return BlobStream(size, "application/octet-stream", chunks, window)

    def _existing_blob(self, name: str, digest: str) -> tuple[Path, int]:
        """The blob's file and size; BLOB_UNKNOWN when it is missing or lies outside the layout."""
        path = self._blob_path(self._layout_for(name), digest)
        try:
            fd = self._open(path)
        except OSError as exc:  # missing, unreadable, or outside the layout
            raise errors.BlobUnknown(
                f"blob {digest} is not in {self.description}",
                detail={"name": name, "digest": digest},
            ) from exc
        try:
            return path, os.fstat(fd).st_size
        finally:
            os.close(fd)

    def _open(self, path: Path) -> int:
        return self._within(open_within, path)

    def _read(self, path: Path) -> bytes:
        return self._within(read_within, path)

    def _within(self, access: Callable[[Path, Path], T], path: Path) -> T:
        """`access(root, path)` on the layout; a path that leaves it is refused and logged."""
        try:
            return access(self.path, path)
        except OutsideRoot as exc:
            log.warning("%s: refused %s", self.description, exc)
            raise

    async def tags(self, name: str) -> list[str]:
        return list(self._layout_for(name).tags.get(name, {}))

    async def referrers(self, name: str, digest: str, artifact_type: str | None) -> Referrers:
        self._layout_for(name)
        empty = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": []}
        return Referrers(orjson.dumps(empty), mediatypes.OCI_INDEX, None)


def _split_ref(ref: str, bare_tags_for: str | None) -> tuple[str | None, str | None]:
    if bare_tags_for is not None and TAG_RE.match(ref):
        return bare_tags_for, ref
    name, sep, tag = ref.rpartition(":")
    if sep and "/" not in tag and NAME_RE.match(name) and TAG_RE.match(tag):
        return name, tag
    return None, None


def _header_safe(text: str) -> bool:
    """Whether a descriptor's media type can be sent as a Content-Type: printable ASCII."""
    return text.isascii() and text.isprintable()


def _declared_media_type(data: bytes) -> str | None:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict) or document.get("schemaVersion") != 2:
        return None
    declared = document.get("mediaType")
    if isinstance(declared, str) and declared in mediatypes.MANIFEST_TYPES:
        return declared
    if isinstance(document.get("manifests"), list):
        return mediatypes.OCI_INDEX
    if isinstance(document.get("layers"), list):
        return mediatypes.OCI_MANIFEST
    return None

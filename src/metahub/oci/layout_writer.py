"""Write OCI image layouts (image-spec v1.1, image-layout.md) to a directory.

The layout is content addressed: blobs live under ``blobs/sha256/<hex>`` and ``index.json``
names the tagged roots through the ``org.opencontainers.image.ref.name`` annotation.
Everything written here is deterministic so that rebuilding the same content yields the
same digests, which keeps tests and demo fixtures stable.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import tempfile
from os import fsync
from pathlib import Path, PurePosixPath

import orjson

# Media types used by the writer; the lead may move these to metahub.oci.mediatypes.
MEDIA_TYPE_IMAGE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_IMAGE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
IMAGE_LAYOUT_VERSION = "1.0.0"

Descriptor = dict[str, object]


def canonical_json(obj: object) -> bytes:
    """Serialise ``obj`` compactly with sorted keys so equal content gives equal digests."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def _write_atomic(target: Path, data: bytes) -> None:
    # A temp file in the same directory plus rename means readers never see a partial file.
    with tempfile.NamedTemporaryFile(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
    ) as tmp:
        tmp_path = Path(tmp.name)
        try:
            tmp.write(data)
            tmp.flush()
            fsync(tmp.fileno())
            # NamedTemporaryFile creates 0600; layouts are read by other users (registries).
            tmp_path.chmod(0o644)
        except BaseException:
            tmp.close()
            tmp_path.unlink(missing_ok=True)
            raise
    try:
        tmp_path.replace(target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


class LayoutWriter:
    """Incrementally add blobs and tags to an OCI image layout directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.blobs_dir = path / "blobs" / "sha256"
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        self._ensure_layout_marker()
        self._manifests: list[Descriptor] = self._load_index()

    def _ensure_layout_marker(self) -> None:
        marker = self.path / "oci-layout"
        if marker.exists():
            version = orjson.loads(marker.read_bytes()).get("imageLayoutVersion")
            if version != IMAGE_LAYOUT_VERSION:
                raise ValueError(f"{marker}: unsupported imageLayoutVersion {version!r}")
            return
        _write_atomic(marker, canonical_json({"imageLayoutVersion": IMAGE_LAYOUT_VERSION}))

    def _load_index(self) -> list[Descriptor]:
        # Loading the existing index is what makes repeated runs incremental, not destructive.
        return read_index_entries(self.path)

    def add_blob(self, data: bytes, media_type: str) -> Descriptor:
        """Store ``data`` under its sha256 digest and return its OCI descriptor."""
        hex_digest = hashlib.sha256(data).hexdigest()
        target = self.blobs_dir / hex_digest
        # Content addressing means an existing file of the right size already holds these bytes.
        if not (target.exists() and target.stat().st_size == len(data)):
            _write_atomic(target, data)
        return {"mediaType": media_type, "digest": f"sha256:{hex_digest}", "size": len(data)}

    def add_json(self, obj: object, media_type: str) -> Descriptor:
        """Store ``obj`` as canonical compact JSON and return its descriptor."""
        return self.add_blob(canonical_json(obj), media_type)

    def lookup(self, ref_name: str) -> Descriptor | None:
        """Return the index.json entry tagged ``ref_name``, if any."""
        for entry in self._manifests:
            if _ref_name(entry) == ref_name:
                return dict(entry)
        return None

    def tag(self, ref_name: str, descriptor: Descriptor) -> None:
        """Point ``ref_name`` at ``descriptor``, replacing an existing entry in place."""
        annotations = descriptor.get("annotations")
        merged = dict(annotations) if isinstance(annotations, dict) else {}
        merged[ANNOTATION_REF_NAME] = ref_name
        entry = {**descriptor, "annotations": merged}
        for i, existing in enumerate(self._manifests):
            if _ref_name(existing) == ref_name:
                self._manifests[i] = entry
                return
        self._manifests.append(entry)

    def save(self) -> None:
        """Write index.json atomically."""
        index = {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_IMAGE_INDEX,
            "manifests": self._manifests,
        }
        _write_atomic(self.path / "index.json", canonical_json(index))


def read_index_entries(path: Path) -> list[Descriptor]:
    """The descriptors in the index.json of the layout at ``path``; empty when it has none.

    Raises ValueError (orjson.JSONDecodeError included) when index.json is not an index.
    """
    index_path = path / "index.json"
    if not index_path.exists():
        return []
    index = orjson.loads(index_path.read_bytes())
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list) or not all(isinstance(m, dict) for m in manifests):
        raise ValueError(f"{index_path}: not an OCI image index")
    return [dict(m) for m in manifests]


def read_refs(path: Path) -> dict[str, Descriptor]:
    """Map each ref name tagged in the layout at ``path`` to its descriptor."""
    refs: dict[str, Descriptor] = {}
    for entry in read_index_entries(path):
        name = _ref_name(entry)
        if isinstance(name, str):
            refs[name] = entry
    return refs


def _ref_name(entry: Descriptor) -> object:
    annotations = entry.get("annotations")
    return annotations.get(ANNOTATION_REF_NAME) if isinstance(annotations, dict) else None


def _tar_entries(files: dict[str, tuple[bytes, int]]) -> dict[str, tuple[bytes, int] | None]:
    """Normalise paths and add every parent directory (value None) so extraction works."""
    entries: dict[str, tuple[bytes, int] | None] = {}
    for raw_path, (content, mode) in files.items():
        parts = PurePosixPath(raw_path.lstrip("/")).parts
        if not parts or any(p in (".", "..") for p in parts):
            raise ValueError(f"invalid layer path: {raw_path!r}")
        name = "/".join(parts)
        if name in entries:
            if entries[name] is None:
                raise ValueError(f"layer path {raw_path!r} is a file and a directory")
            raise ValueError(f"duplicate layer path: {raw_path!r}")
        entries[name] = (content, mode)
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if entries.get(parent) is not None:
                raise ValueError(f"layer path {parent!r} is a file and a directory")
            entries[parent] = None
    return entries


def make_layer(files: dict[str, tuple[bytes, int]]) -> tuple[bytes, str]:
    """Build a reproducible gzipped tar layer from ``path -> (content, mode)``.

    Returns ``(gzipped bytes, diff_id)`` where the diff_id is the digest of the uncompressed
    tar, as image configs require. Timestamps, owners and order are fixed for determinism.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        # Sorting puts each parent before its children, since a prefix sorts first.
        for name, value in sorted(_tar_entries(files).items()):
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if value is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                content, mode = value
                info.mode = mode
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    raw = buffer.getvalue()
    # gzip.compress with mtime=0 writes no file name and a fixed header.
    return gzip.compress(raw, compresslevel=9, mtime=0), f"sha256:{hashlib.sha256(raw).hexdigest()}"


def image(
    writer: LayoutWriter,
    *,
    layers: list[tuple[bytes, str]],
    entrypoint: list[str],
    os: str,
    architecture: str,
    variant: str | None = None,
    annotations: dict[str, str] | None = None,
) -> Descriptor:
    """Write config, layers and an image manifest; return the manifest descriptor.

    The descriptor carries a ``platform`` so callers can place it straight into an index.
    """
    platform: dict[str, object] = {"architecture": architecture, "os": os}
    if variant is not None:
        platform["variant"] = variant
    config = {
        **platform,
        "config": {"Entrypoint": list(entrypoint)},
        "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in layers]},
    }
    manifest: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_IMAGE_MANIFEST,
        "config": writer.add_json(config, MEDIA_TYPE_IMAGE_CONFIG),
        "layers": [writer.add_blob(blob, MEDIA_TYPE_LAYER_TAR_GZIP) for blob, _ in layers],
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    descriptor = writer.add_json(manifest, MEDIA_TYPE_IMAGE_MANIFEST)
    descriptor["platform"] = platform
    return descriptor


def image_index(
    writer: LayoutWriter,
    manifests: list[Descriptor],
    *,
    annotations: dict[str, str] | None = None,
) -> Descriptor:
    """Write an OCI image index over ``manifests`` (order kept); return its descriptor."""
    index: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_IMAGE_INDEX,
        "manifests": [dict(m) for m in manifests],
    }
    if annotations:
        index["annotations"] = dict(annotations)
    return writer.add_json(index, MEDIA_TYPE_IMAGE_INDEX)

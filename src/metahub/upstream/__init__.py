"""Where images come from: one interface, a registry client and an OCI-layout store."""

from metahub.upstream.base import BlobStream, ByteRange, Manifest, Upstream

__all__ = ["BlobStream", "ByteRange", "Manifest", "Upstream"]

"""Media types MetaHub reads, and the Accept header it sends upstream."""

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_MANIFEST_V1 = "application/vnd.docker.distribution.manifest.v1+json"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
IMAGE_MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFEST_TYPES = (
    INDEX_TYPES
    | IMAGE_MANIFEST_TYPES
    | {
        DOCKER_MANIFEST_V1_SIGNED,
        DOCKER_MANIFEST_V1,
    }
)

# Upstream is always asked for everything we can serve, indexes first, so the choice of what a
# client gets is made here and not by the upstream's content negotiation.
UPSTREAM_ACCEPT = ", ".join(
    [OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST, DOCKER_MANIFEST_V1_SIGNED]
)


def is_index(media_type: str) -> bool:
    return media_type in INDEX_TYPES


def accepts_index(accept_header: str | None) -> bool:
    """Whether a client's Accept header admits an image index or manifest list.

    A missing header, or one with a wildcard, is read as "anything".
    """
    if not accept_header:
        return True
    for part in accept_header.split(","):
        media, *params = (piece.strip().lower() for piece in part.split(";"))
        if any(param.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for param in params):
            continue  # q=0 means "not acceptable"
        if media in INDEX_TYPES or media in ("*/*", "application/*"):
            return True
    return False

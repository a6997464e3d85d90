"""OCI data model: digests, references, media types and image indexes."""

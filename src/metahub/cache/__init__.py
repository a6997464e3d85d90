"""In-memory caches and request coalescing for the hot path."""

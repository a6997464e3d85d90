"""MetaHub: a dynamic OCI registry proxy."""

__version__ = "0.1.0"

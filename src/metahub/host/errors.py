"""The one error type of the host tools: `metahub login` catches it alone."""

from __future__ import annotations


class HostError(RuntimeError):
    """Why a host tool could not do its work; the message is shown to the user as is."""

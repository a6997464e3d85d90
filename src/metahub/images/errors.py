"""The one error type of images: a command that builds, reads or pushes images catches it alone."""

from __future__ import annotations


class ImageError(Exception):
    """Why an image or index cannot be specified, built, fetched or pushed; shown to users as is.

    Errors of the publisher's own (credentials, a registry's answers) derive from it too, since
    the layers put this base below them.
    """

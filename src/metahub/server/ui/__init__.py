"""The admins' web UI at `/ui/`: server-rendered pages over the management service."""

from metahub.server.ui.routes import create_ui

__all__ = ["create_ui"]

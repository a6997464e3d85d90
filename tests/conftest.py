"""Shared fixtures: real servers and clients started in temp dirs on loopback."""

pytest_plugins = ["tests.support.fixtures"]

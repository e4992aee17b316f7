"""Upstream-compatible import path for the loaders."""

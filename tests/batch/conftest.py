"""Fixtures of the batch tests (shared with the operator tests: ``operators.support``)."""

from __future__ import annotations

from operators.support import comfy_conn, in_thread

__all__ = ["comfy_conn", "in_thread"]

"""Fixtures shared by the operator, sensor and trigger tests (defined in ``operators.support``)."""

from __future__ import annotations

from operators.support import comfy_conn, in_thread

__all__ = ["comfy_conn", "in_thread"]

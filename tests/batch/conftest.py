"""Fixtures of the batch tests (the stand-in connection ones are shared with the operator tests)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from operators.support import comfy_conn, in_thread

__all__ = ["comfy_conn", "in_thread", "memory_storage"]


@pytest.fixture
def memory_storage(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``memory://`` as an object store for Airflow's ``ObjectStoragePath`` (emptied afterwards)."""
    from airflow.sdk.io import fs
    from fsspec.implementations.memory import MemoryFileSystem

    fs._register_filesystems.cache_clear()
    monkeypatch.setitem(fs._BUILTIN_SCHEME_TO_FS, "memory", lambda _c, _o=None: MemoryFileSystem())
    MemoryFileSystem.store.clear()
    MemoryFileSystem.pseudo_dirs[:] = [""]
    try:
        yield "memory://bucket"
    finally:
        MemoryFileSystem.store.clear()
        fs._register_filesystems.cache_clear()

"""Fixtures for the hook tests (helpers live in hook_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_comfy.hooks.comfyui import ComfyUIHook
from airflow_comfy.testing import StandInServer
from hooks.hook_helpers import fast_hook


@pytest.fixture
def hook(standin: StandInServer) -> Iterator[ComfyUIHook]:
    """A hook on the stand-in with millisecond retry waits."""
    h = fast_hook(standin.url)
    yield h
    h.close()


@pytest.fixture
def free_port_url(tmp_path: Path) -> str:
    """A 127.0.0.1 URL where nothing listens (a port bound then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"

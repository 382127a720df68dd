"""Fixtures for the contract tests: the server under test, stand-in or live (COMFYUI_URL)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .clients import Comfy

# Per-node delay given to the stand-in so that `long_about_10s` (8 x ImageBlur) is slow enough to be
# observed running/pending and interrupted, while keeping the stand-in suite fast.
STANDIN_BLUR_SECONDS = 0.3
# One ImageBlur of `long_about_10s` on the real CPU server takes about 1.2 s.
LIVE_BLUR_SECONDS = 1.3

SERVER_KINDS = ["standin", pytest.param("live", marks=pytest.mark.live)]


@dataclass
class Server:
    kind: str  # "standin" | "live"
    url: str
    blur_seconds: float  # how long one ImageBlur of `long_about_10s` takes on this server
    handle: Any = None  # the StandInServer (for restart), None for the live server

    @property
    def live(self) -> bool:
        return self.kind == "live"


def _standin_server(request: pytest.FixtureRequest, blur: float) -> Server:
    server = request.getfixturevalue("standin")
    return Server("standin", str(server.url).rstrip("/"), blur, server)


@pytest.fixture(params=SERVER_KINDS)
def contract_server(request: pytest.FixtureRequest) -> Server:
    """The server under test: the stand-in (fresh per test) or the live ComfyUI at COMFYUI_URL."""
    if request.param == "standin":
        return _standin_server(request, 0.0)
    return Server("live", request.getfixturevalue("live_url"), LIVE_BLUR_SECONDS)


@pytest.fixture(params=SERVER_KINDS)
def slow_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """Like ``contract_server``, but the stand-in's ImageBlur is slowed down (``node_delays``)."""
    if request.param == "live":
        yield Server("live", request.getfixturevalue("live_url"), LIVE_BLUR_SECONDS)
        return
    from airflow_comfy.testing import StandInServer

    with StandInServer(
        base_dir=tmp_path / "comfyui-slow", node_delays={"ImageBlur": STANDIN_BLUR_SECONDS}
    ) as server:
        yield Server("standin", str(server.url).rstrip("/"), STANDIN_BLUR_SECONDS, server)


@pytest.fixture
def comfy(contract_server: Server) -> Iterator[Comfy]:
    client = Comfy(contract_server.url)
    yield client
    client.cleanup()


@pytest.fixture
def slow_comfy(slow_server: Server) -> Iterator[Comfy]:
    client = Comfy(slow_server.url)
    yield client
    client.cleanup()

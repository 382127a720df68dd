"""Fixtures for the stand-in server tests (helpers live in standin_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from standin_helpers import WsRecorder

from airflow_comfy.testing import StandInServer


@pytest.fixture
def ws_factory(standin: StandInServer) -> Iterator[Any]:
    opened: list[WsRecorder] = []

    def make(
        client_id: str | None, feature_flags: bool = False, server: StandInServer | None = None
    ) -> WsRecorder:
        recorder = WsRecorder((server or standin).url, client_id, feature_flags)
        opened.append(recorder)
        return recorder

    yield make
    for recorder in opened:
        recorder.close()


@pytest.fixture
def slow_standin(tmp_path: Path) -> Iterator[StandInServer]:
    """A stand-in where ImageBlur takes 0.3 s per execution (the long workflow takes ~2.4 s)."""
    with StandInServer(base_dir=tmp_path / "slow", node_delays={"ImageBlur": 0.3}) as server:
        yield server

"""Fixtures of the resilience suite: the guard every scenario runs under, and credentials.

``guard`` is autouse, so it is set up before (and torn down after) the stand-in server and the
thread pools a test uses: its final checks see them stopped, and flag only what the code under test
left behind.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from operators.support import in_thread

from resilience.support import AUTHS, Guard, connection_env, start_guard

__all__ = ["in_thread"]


@pytest.fixture(autouse=True)
def guard(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> Iterator[Guard]:
    checker = start_guard(caplog, capsys)
    yield checker
    checker.check()


@pytest.fixture(params=AUTHS)
def auth(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def conn(standin: object, auth: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A ``comfyui`` connection to this test's stand-in with ``auth`` credentials and fast retries."""
    return connection_env(monkeypatch, standin.url, auth)[0]  # type: ignore[attr-defined]

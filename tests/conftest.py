"""Shared fixtures: an isolated Airflow home, the stand-in server, and the live server when asked.

The Airflow home is a fresh temporary folder per test process, removed when the process exits.

Airflow reads its configuration at import time, so the environment is set here, before any test
module imports Airflow.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# One folder per test process for the Airflow home and pytest's tmp_path folders, removed when the
# process exits whatever the outcome (each xdist worker has its own; the controller's holds theirs).
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="airflow-comfy-tests-"))
atexit.register(shutil.rmtree, _SESSION_DIR, ignore_errors=True)
_AIRFLOW_HOME = str(_SESSION_DIR / "airflow")
os.environ.setdefault("AIRFLOW_HOME", _AIRFLOW_HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
# The node-catalogue cache (airflow_comfy.hooks.catalog) stays inside the throwaway folder.
os.environ.setdefault("AIRFLOW_COMFY_CACHE_DIR", os.path.join(_AIRFLOW_HOME, "cache"))

from contract_data import CONTRACT_DIR, load_transcript  # noqa: E402  (tests/ is on sys.path)

__all__ = ["CONTRACT_DIR", "load_transcript"]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Put pytest's tmp_path folders inside this session's folder unless --basetemp says otherwise."""
    if config.option.basetemp is None:
        config.option.basetemp = str(_SESSION_DIR / "pytest")


@pytest.fixture(scope="session")
def contract_workflows() -> dict[str, dict]:
    """The weight-free API-format workflows recorded with the contract."""
    return load_transcript("workflows")["workflows"]


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[object]:
    """A fresh stand-in ComfyUI server on 127.0.0.1 and an ephemeral port, stopped after the test."""
    from airflow_comfy.testing import StandInServer

    with StandInServer(base_dir=tmp_path / "comfyui") as server:
        yield server


@pytest.fixture
def live_url() -> str:
    """The real ComfyUI named by COMFYUI_URL; the test is skipped when it is not set."""
    url = os.environ.get("COMFYUI_URL")
    if not url:
        pytest.skip("COMFYUI_URL is not set: no real ComfyUI to test against")
    return url.rstrip("/")


@pytest.fixture(autouse=True)
def _fresh_pool_memories() -> Iterator[None]:
    """A server a test left "known dead" (or a submission "in flight") must not steer the next test:
    stand-ins come and go on ephemeral ports, which can be reused."""
    from airflow_comfy.hooks import pool

    yield
    pool._DEAD.clear()
    pool._IN_FLIGHT.clear()

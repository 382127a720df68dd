"""Shared fixtures: an isolated Airflow home, the stand-in server, and the live server when asked.

Airflow reads its configuration at import time, so the environment is set here, before any test
module imports Airflow.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="airflow-comfy-tests-")
os.environ.setdefault("AIRFLOW_HOME", _AIRFLOW_HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")

CONTRACT_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "comfyui-contract"
if not CONTRACT_DIR.is_dir():  # CI clones main next to a copy of shared/
    CONTRACT_DIR = Path(os.environ.get("COMFYUI_CONTRACT_DIR", "../shared/comfyui-contract")).resolve()


def load_transcript(name: str) -> dict:
    """One recorded transcript from ../shared/comfyui-contract (``name`` without .json)."""
    return json.loads((CONTRACT_DIR / f"{name}.json").read_text())


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

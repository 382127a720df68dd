"""Deployment tests: real Airflow processes (and Redis, Chromium) started by the tests themselves.

Each module is marked ``deployment`` (``pytestmark``) and deselected by default (``addopts`` in pyproject.toml); run them with
``pytest -m deployment tests/deployment`` (``.ci/deployment`` installs what they need and does).
A test whose binary (``redis-server``, ``chromium``) or Python package is missing skips, naming it.
Screenshots and other artifacts go to ``build/deployment-artifacts/`` (git-ignored).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_comfy.testing import StandInServer

from .harness import ROOT

ARTIFACTS = ROOT / "build" / "deployment-artifacts"


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (.ci/deployment installs it with apt-get)")
    return path


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """A folder of the module's own (not pytest's tmp, which a parallel pytest session may prune)."""
    path = Path(tempfile.mkdtemp(prefix="airflow-comfy-deployment-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def standin(workdir: Path) -> Iterator[StandInServer]:
    with StandInServer(base_dir=workdir / "comfyui") as server:
        yield server

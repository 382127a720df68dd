"""Fixtures of the workflow tests: the recorded object_info and the saved web-UI workflows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from contract_data import CONTRACT_DIR

from airflow_comfy.workflows import load_object_info, load_workflow

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def object_info() -> dict[str, Any]:
    """The /object_info recorded from ComfyUI 0.3.64."""
    return load_object_info(CONTRACT_DIR / "object_info.json")


@pytest.fixture(scope="session")
def ui() -> Callable[[str], dict[str, Any]]:
    """Load ``data/ui/<name>.json``, a workflow saved by the ComfyUI web UI."""
    return lambda name: load_workflow(DATA / "ui" / f"{name}.json")

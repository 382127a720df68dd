"""One stand-in server and one output folder for the whole session: each example DAG run is a dag.test().

The example DAG files read ``AIRFLOW_COMFY_OUTPUT_DIR`` when they are parsed, so it is set here (and
restored afterwards) before any DagBag loads them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_comfy.testing import StandInServer

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags_examples"


@pytest.fixture(scope="session")
def example_outputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("example-outputs")
    previous = os.environ.get("AIRFLOW_COMFY_OUTPUT_DIR")
    os.environ["AIRFLOW_COMFY_OUTPUT_DIR"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("AIRFLOW_COMFY_OUTPUT_DIR", None)
    else:
        os.environ["AIRFLOW_COMFY_OUTPUT_DIR"] = previous


@pytest.fixture(scope="session")
def session_standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandInServer]:
    with StandInServer(base_dir=tmp_path_factory.mktemp("standin")) as server:
        yield server

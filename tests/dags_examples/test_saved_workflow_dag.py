"""The example DAG that runs a workflow saved on the server (comfyui://), end to end on the stand-in."""

from __future__ import annotations

import hashlib
from pathlib import Path

import requests

from airflow_comfy.testing import StandInServer
from airflow_comfy.testing.dags import run_dag

from .conftest import DAGS_FOLDER

SAVED = "workflows%2Fexamples%2Finvert_blur.json"


def _save(server: StandInServer, content: bytes) -> None:
    """What the web UI's Save does: POST /userdata/{path} with the workflow's bytes."""
    answer = requests.post(
        f"{server.url}/api/userdata/{SAVED}?overwrite=true&full_info=true", data=content, timeout=30
    )
    answer.raise_for_status()


def test_saved_workflow_runs_and_records_its_version(
    session_standin: StandInServer, example_outputs: Path
) -> None:
    content = (DAGS_FOLDER / "workflows" / "invert_blur_ui.json").read_bytes()
    _save(session_standin, content)

    result = run_dag("comfyui_saved_workflow", DAGS_FOLDER, comfyui_url=session_standin.url)

    result.raise_for_state()
    answer = result.return_value("render")
    digest = hashlib.sha256(content).hexdigest()
    assert answer["workflow_sha256"] == digest == result.xcom("render", "workflow_sha256")
    assert answer["workflow_source"] == "comfyui://workflows/examples/invert_blur.json"
    [path] = answer["paths"]
    assert Path(path).is_file() and Path(path).is_relative_to(example_outputs / "comfyui_saved_workflow")

    _save(session_standin, content.replace(b'"etl/processed"', b'"etl/processed-v2"'))  # saved again, changed
    again = run_dag("comfyui_saved_workflow", DAGS_FOLDER, comfyui_url=session_standin.url)
    again.raise_for_state()
    assert again.return_value("render")["workflow_sha256"] != digest


def test_missing_saved_workflow_fails_listing_close_names(
    session_standin: StandInServer, example_outputs: Path, capfd
) -> None:
    _save(session_standin, (DAGS_FOLDER / "workflows" / "invert_blur_ui.json").read_bytes())
    result = run_dag(
        "comfyui_saved_workflow",
        DAGS_FOLDER,
        comfyui_url=session_standin.url,
        run_conf={"workflow": "comfyui://workflows/examples/invert_blurr.json"},
    )
    assert result.task_states[("render", -1)] == "failed"
    logged = "".join(capfd.readouterr())  # the task's log goes to the console in dag.test()
    assert "did you mean: workflows/examples/invert_blur.json" in logged

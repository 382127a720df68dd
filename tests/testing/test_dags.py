"""``airflow_comfy.testing.dags.run_dag``: runs a DAG with dag.test() and reports without hiding failures.

The DAGs are written into a temporary folder per module; one stand-in serves the module. Each run
costs a dag.test() (a second or two after the first), so the success and failure runs are shared by
the tests that inspect them.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_comfy.testing import StandInServer
from airflow_comfy.testing.dags import (
    DagLoadError,
    DagRunFailedError,
    DagRunResult,
    conn_env_var,
    ensure_db,
    run_dag,
)

BEFORE = {
    name: os.environ.get(name) for name in ("AIRFLOW_CONN_COMFYUI_DEFAULT", "AIRFLOW__CORE__DAGS_FOLDER")
}

DAG_FILE = '''
"""Helper-test DAGs: one that succeeds (with a mapped task) and one whose ComfyUI prompt fails."""
import pendulum
from airflow.sdk import dag, task

from airflow_comfy.operators.comfyui import ComfyUIPromptOperator

START = pendulum.datetime(2026, 1, 1, tz="UTC")


def workflow(middle):
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 9}},
        "2": middle,
        "9": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "helper/img"}},
    }


OK = workflow({"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}})
BAD = workflow({"class_type": "StandInFail", "inputs": {"image": ["1", 0], "message": "helper boom"}})


@dag(dag_id="helper_ok", schedule=None, start_date=START, params={"label": "default"})
def helper_ok():
    render = ComfyUIPromptOperator(task_id="render", workflow=OK, check_interval=0.1, timeout=60)

    @task
    def label(paths, **context):
        return {"label": context["params"]["label"], "count": len(paths)}

    @task
    def square(n):
        return n * n

    label(render.output)
    square.expand(n=[1, 2, 3])


@dag(dag_id="helper_failing", schedule=None, start_date=START)
def helper_failing():
    render = ComfyUIPromptOperator(task_id="render", workflow=BAD, check_interval=0.1, timeout=60, retries=0)

    @task
    def after(paths):
        return paths

    after(render.output)


helper_ok()
helper_failing()
'''


@pytest.fixture(scope="module")
def dags_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("helper-dags")
    (folder / "helper_dags.py").write_text(textwrap.dedent(DAG_FILE))
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandInServer]:
    with StandInServer(base_dir=tmp_path_factory.mktemp("helper-standin")) as standin:
        yield standin


@pytest.fixture(scope="module")
def ok_result(dags_dir: Path, server: StandInServer) -> DagRunResult:
    return run_dag("helper_ok", dags_dir, comfyui_url=server.url, run_conf={"label": "from-conf"})


@pytest.fixture(scope="module")
def failed_result(dags_dir: Path, server: StandInServer) -> DagRunResult:
    return run_dag("helper_failing", dags_dir, comfyui_url=server.url)


def test_success_result_carries_states_and_return_values(
    ok_result: DagRunResult, server: StandInServer
) -> None:
    assert ok_result.dag_id == "helper_ok" and ok_result.run_id
    assert ok_result.state == "success" and ok_result.succeeded
    ok_result.raise_for_state()
    assert ok_result.task_states == {
        ("render", -1): "success",
        ("label", -1): "success",
        ("square", 0): "success",
        ("square", 1): "success",
        ("square", 2): "success",
    }
    assert ok_result.return_value("render") == ["output/helper/img_00001_.png"]
    assert (server.base_dir / "output/helper/img_00001_.png").is_file()
    assert ok_result.return_value("label") == {"label": "from-conf", "count": 1}
    assert ok_result.mapped_return_values("square") == [1, 4, 9]
    assert ok_result.xcom("render", "prompt_id") in server.submissions
    assert ok_result.xcom("render", "outputs")[0]["filename"] == "img_00001_.png"


def test_failures_are_reported_not_hidden(failed_result: DagRunResult) -> None:
    assert failed_result.state == "failed" and not failed_result.succeeded
    assert failed_result.task_states == {("render", -1): "failed", ("after", -1): "upstream_failed"}
    assert failed_result.failed_tasks() == failed_result.task_states
    assert ("render", -1) not in failed_result.return_values
    assert failed_result.xcom("render", "prompt_id")  # pushed before waiting, kept after the failure
    with pytest.raises(
        DagRunFailedError,
        match=r"helper_failing/.* ended failed; tasks: after=upstream_failed, render=failed",
    ):
        failed_result.raise_for_state()


def test_environment_is_restored(ok_result: DagRunResult, dags_dir: Path) -> None:
    assert conn_env_var("comfyui_default") == "AIRFLOW_CONN_COMFYUI_DEFAULT"
    assert os.environ.get("AIRFLOW_CONN_COMFYUI_DEFAULT") == BEFORE.get("AIRFLOW_CONN_COMFYUI_DEFAULT")
    assert os.environ.get("AIRFLOW__CORE__DAGS_FOLDER") == BEFORE.get("AIRFLOW__CORE__DAGS_FOLDER")
    from airflow import settings

    assert str(dags_dir.resolve()) != settings.DAGS_FOLDER


def test_unknown_dag_id_is_a_load_error(dags_dir: Path, server: StandInServer) -> None:
    with pytest.raises(DagLoadError, match=r"'nope' not found.*helper_failing.*helper_ok"):
        run_dag("nope", dags_dir, comfyui_url=server.url)


def test_broken_dag_file_reports_the_import_error(tmp_path: Path, server: StandInServer) -> None:
    (tmp_path / "broken.py").write_text(
        "from airflow.sdk import dag\nraise RuntimeError('cannot parse me')\n"
    )
    with pytest.raises(DagLoadError, match="cannot parse me"):
        run_dag("broken", tmp_path, comfyui_url=server.url)
    with pytest.raises(DagLoadError, match="No such DAG folder"):
        run_dag("broken", tmp_path / "missing", comfyui_url=server.url)


def test_ensure_db_is_idempotent() -> None:
    ensure_db()
    ensure_db()

"""``airflow_comfy.links``: the extra links serialize, and resolve from XCom after a real run.

A real ``dag.test()`` run (through :func:`airflow_comfy.testing.dags.run_dag`, against a stand-in)
stores what the worker computed for each link in the XCom ``_link_<class>`` (Airflow 3 does this
when a task instance ends); the API server reads it back through the *deserialized* operator. Both
sides are checked here, for a success (operator and sensor) and for a failed prompt (the web-UI
link still works, the output link is empty). The unit tests mock ``XCom.get_value``.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from airflow_comfy.links import ComfyUIOutputLink, ComfyUIWebLink, first_view_url
from airflow_comfy.operators.comfyui import ComfyUIPromptOperator
from airflow_comfy.sensors.comfyui import ComfyUIPromptSensor
from airflow_comfy.testing import StandInServer
from airflow_comfy.testing.dags import DagRunResult, run_dag

LINKS = {"ComfyUI": "_link_ComfyUIWebLink", "ComfyUI output": "_link_ComfyUIOutputLink"}

DAG_FILE = '''
"""Link-test DAGs: a prompt that succeeds (operator, then submit + sensor) and one that fails."""
import pendulum
from airflow.sdk import dag

from airflow_comfy.operators.comfyui import ComfyUIPromptOperator
from airflow_comfy.sensors.comfyui import ComfyUIPromptSensor

START = pendulum.datetime(2026, 1, 1, tz="UTC")


def workflow(middle, prefix):
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 9}},
        "2": middle,
        "9": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


OK = workflow({"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}, "links/ok")
SENSED = workflow({"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}, "links/sensed")
DEFERRED = workflow({"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}, "links/deferred")
SUBMITTED = workflow({"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}, "links/submitted")
BAD = workflow({"class_type": "StandInFail", "inputs": {"image": ["1", 0], "message": "boom"}}, "links/bad")


@dag(dag_id="links_ok", schedule=None, start_date=START)
def links_ok():
    ComfyUIPromptOperator(task_id="render", workflow=OK, check_interval=0.1, timeout=60)
    submit = ComfyUIPromptOperator(task_id="submit", workflow=SENSED, wait_for_completion=False)
    wait = ComfyUIPromptSensor(
        task_id="wait", prompt_id="{{ ti.xcom_pull(task_ids='submit') }}", poke_interval=0.2, timeout=60
    )
    submit >> wait


@dag(dag_id="links_failing", schedule=None, start_date=START)
def links_failing():
    ComfyUIPromptOperator(task_id="render", workflow=BAD, check_interval=0.1, timeout=60, retries=0)


@dag(dag_id="links_quiet", schedule=None, start_date=START)
def links_quiet():
    ComfyUIPromptOperator(task_id="deferred", workflow=DEFERRED, deferrable=True, check_interval=0.1, timeout=60)
    ComfyUIPromptOperator(task_id="submit_only", workflow=SUBMITTED, wait_for_completion=False)


links_ok()
links_failing()
links_quiet()
'''


@pytest.fixture(scope="module")
def dags_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("link-dags")
    (folder / "link_dags.py").write_text(textwrap.dedent(DAG_FILE))
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandInServer]:
    with StandInServer(base_dir=tmp_path_factory.mktemp("links-standin")) as standin:
        yield standin


@pytest.fixture(scope="module")
def ok_run(dags_folder: Path, server: StandInServer) -> DagRunResult:
    return run_dag("links_ok", dags_folder, comfyui_url=server.url)


@pytest.fixture(scope="module")
def failing_run(dags_folder: Path, server: StandInServer) -> DagRunResult:
    return run_dag("links_failing", dags_folder, comfyui_url=server.url)


def _serialized_dag(dags_folder: Path, dag_id: str) -> Any:
    """The DAG as the API server sees it: serialized to JSON by Airflow's DAG serializer, read back."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    dag = DagBag(dag_folder=str(dags_folder)).dags[dag_id]
    encoded = json.loads(json.dumps(DagSerialization.to_dict(dag)))
    return DagSerialization.from_dict(encoded), encoded


def _server_side_link(dags_folder: Path, result: DagRunResult, task_id: str, name: str) -> str | None:
    """What the API server answers for one link of one task instance of ``result``'s run."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag, _ = _serialized_dag(dags_folder, result.dag_id)
    with create_session() as session:
        ti = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == result.dag_id,
                TaskInstance.run_id == result.run_id,
                TaskInstance.task_id == task_id,
            )
        ).one()
        return dag.get_task(task_id).get_extra_links(ti, name)


# --- declaration and serialization ---------------------------------------------------------------


def test_operator_and_sensor_declare_both_links() -> None:
    for cls in (ComfyUIPromptOperator, ComfyUIPromptSensor):
        assert {link.name: link.xcom_key for link in cls.operator_extra_links} == LINKS


def test_links_survive_the_dag_serializer(dags_folder: Path) -> None:
    dag, encoded = _serialized_dag(dags_folder, "links_ok")
    tasks = {task["__var"]["task_id"]: task["__var"] for task in encoded["dag"]["tasks"]}
    for task_id in ("render", "submit", "wait"):
        assert tasks[task_id]["_operator_extra_links"] == LINKS
        assert dag.get_task(task_id).extra_links == sorted(LINKS)


# --- resolution after a real run -----------------------------------------------------------------


def test_links_resolve_from_xcom_after_a_successful_run(
    ok_run: DagRunResult, dags_folder: Path, server: StandInServer
) -> None:
    ok_run.raise_for_state()
    [record] = ok_run.xcom("render", "outputs")
    assert record["view_url"].startswith(f"{server.url}/view?")
    # Stored by the worker when the task ended...
    assert ok_run.xcom("render", LINKS["ComfyUI"]) == server.url
    assert ok_run.xcom("render", LINKS["ComfyUI output"]) == record["view_url"]
    # ... and served from there by the deserialized operator, as the API server does.
    assert _server_side_link(dags_folder, ok_run, "render", "ComfyUI") == server.url
    assert _server_side_link(dags_folder, ok_run, "render", "ComfyUI output") == record["view_url"]


def test_sensor_links_point_at_the_sensed_prompt(
    ok_run: DagRunResult, dags_folder: Path, server: StandInServer
) -> None:
    [record] = ok_run.xcom("wait", "outputs")
    assert record["filename"].startswith("sensed_")
    assert _server_side_link(dags_folder, ok_run, "wait", "ComfyUI") == server.url
    assert _server_side_link(dags_folder, ok_run, "wait", "ComfyUI output") == record["view_url"]
    # The submit-only task has a prompt but no outputs yet: its output link is empty.
    assert _server_side_link(dags_folder, ok_run, "submit", "ComfyUI") == server.url
    assert not _server_side_link(dags_folder, ok_run, "submit", "ComfyUI output")


def test_a_failed_prompt_keeps_its_web_ui_link(failing_run: DagRunResult, server: StandInServer) -> None:
    assert failing_run.task_states == {("render", -1): "failed"}
    assert failing_run.xcom("render", LINKS["ComfyUI"]) == server.url  # pushed before waiting
    assert not failing_run.xcom("render", LINKS["ComfyUI output"])


def test_a_run_that_did_not_fail_logs_no_missing_xcom_error(
    dags_folder: Path, server: StandInServer, capfd: pytest.CaptureFixture[str]
) -> None:
    """A deferring task and a submit-only task end without ``outputs``: the output link must not read it."""
    result = run_dag("links_quiet", dags_folder, comfyui_url=server.url)
    output = "".join(capfd.readouterr())
    result.raise_for_state()
    assert "XCom not found" not in output
    assert (
        result.xcom("deferred", LINKS["ComfyUI output"]) == result.xcom("deferred", "outputs")[0]["view_url"]
    )
    assert result.xcom("submit_only", LINKS["ComfyUI output"]) == ""


@pytest.mark.parametrize("state", ["deferred", "up_for_reschedule", "up_for_retry", "failed", "skipped"])
def test_the_output_link_does_not_read_outputs_of_a_task_that_stopped_without_them(state: str) -> None:
    from airflow.utils.state import TaskInstanceState

    ti = mock.Mock(dag_id="d", run_id="r", task_id="t", map_index=-1, state=TaskInstanceState(state))
    with mock.patch("airflow.sdk.execution_time.xcom.XCom.get_value") as get_value:
        assert ComfyUIOutputLink().get_link(mock.Mock(), ti_key=ti) == ""
        submit_only = mock.Mock(wait_for_completion=False)
        ti.state = TaskInstanceState.SUCCESS
        assert ComfyUIOutputLink().get_link(submit_only, ti_key=ti) == ""
    get_value.assert_not_called()


# --- get_link itself ------------------------------------------------------------------------------


def _resolve(link: Any, xcoms: dict[str, Any]) -> str:
    ti_key = mock.Mock(dag_id="d", run_id="r", task_id="t", map_index=-1, state=None)  # a plain key
    with mock.patch("airflow.sdk.execution_time.xcom.XCom.get_value") as get_value:
        get_value.side_effect = lambda *, ti_key, key: xcoms.get(key)
        answer = link.get_link(mock.Mock(), ti_key=ti_key)
    for call in get_value.call_args_list:
        assert call.kwargs["ti_key"] is ti_key
    return answer


def test_get_link_reads_the_xcoms_of_the_task_instance() -> None:
    outputs = [
        {"view_url": "http://h:8188/view?filename=a.png"},
        {"view_url": "http://h:8188/view?filename=b"},
    ]
    xcoms = {"comfyui_url": "http://h:8188", "outputs": outputs}
    assert _resolve(ComfyUIWebLink(), xcoms) == "http://h:8188"
    assert _resolve(ComfyUIOutputLink(), xcoms) == "http://h:8188/view?filename=a.png"


@pytest.mark.parametrize("outputs", [None, [], "text", [{}], [{"view_url": 3}], ["x"], {"view_url": "u"}])
def test_missing_or_malformed_xcoms_give_an_empty_link(outputs: Any) -> None:
    assert first_view_url(outputs) == ""
    assert _resolve(ComfyUIOutputLink(), {"outputs": outputs}) == ""
    assert _resolve(ComfyUIWebLink(), {}) == ""

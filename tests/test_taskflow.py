"""``airflow_comfy.taskflow.run_workflow``: the operator's code path, called from inside a ``@task``.

Real ``dag.test()`` runs against a stand-in: the helper returns the paths, pushes the operator's
XComs on the calling task, derives the prompt id from the calling task instance (so a second call
with the same workflow re-attaches instead of submitting again), and feeds the calling task's
Asset outlets.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_comfy.protocol.ids import is_canonical_uuid
from airflow_comfy.taskflow import run_workflow
from airflow_comfy.testing import StandInServer
from airflow_comfy.testing.dags import DagRunResult, run_dag

DAG_FILE = '''
"""TaskFlow-helper test DAG."""
import pendulum
from airflow.sdk import Asset, dag, task

from airflow_comfy.taskflow import run_workflow

WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 7}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "flow/img"}},
}
FLOW_RENDERS = Asset(name="flow_renders", uri="comfyui://renders/taskflow-test")


@dag(dag_id="taskflow_helper", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))
def taskflow_helper():
    @task(outlets=[FLOW_RENDERS])
    def render(output_dir: str) -> dict:
        first = run_workflow(
            WORKFLOW, overrides={"1.color": 255}, output_dir=output_dir, wait_mode="polling", check_interval=0.1
        )
        again = run_workflow(
            WORKFLOW, overrides={"1.color": 255}, output_dir=output_dir, wait_mode="polling", check_interval=0.1
        )
        return {"first": first, "again": again}

    render("{{ params.out }}")


taskflow_helper()
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandInServer]:
    with StandInServer(base_dir=tmp_path_factory.mktemp("taskflow-standin")) as standin:
        yield standin


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("taskflow-out")


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory, server: StandInServer, out_dir: Path) -> DagRunResult:
    folder = tmp_path_factory.mktemp("taskflow-dags")
    (folder / "taskflow_dags.py").write_text(textwrap.dedent(DAG_FILE))
    return run_dag("taskflow_helper", folder, comfyui_url=server.url, run_conf={"out": str(out_dir)})


def test_run_workflow_returns_the_downloaded_outputs(result: DagRunResult, out_dir: Path) -> None:
    from PIL import Image

    result.raise_for_state()
    [path] = result.return_value("render")["first"]
    assert Path(path).is_file() and Path(path).is_relative_to(out_dir)
    with Image.open(path) as image:  # the override reached the workflow: 255 inverted is 0xFFFF00
        assert image.convert("RGB").getpixel((0, 0)) == (255, 255, 0)


def test_the_prompt_id_comes_from_the_calling_task_and_is_reattached(
    result: DagRunResult, server: StandInServer
) -> None:
    prompt_id = result.xcom("render", "prompt_id")
    assert is_canonical_uuid(prompt_id)
    assert server.submissions.count(prompt_id) == 1  # the second call re-attached to the finished prompt
    values = result.return_value("render")
    assert values["again"] == values["first"]
    assert result.xcom("render", "comfyui_url") == server.url
    assert result.xcom("render", "outputs")[0]["filename"] == Path(values["first"][0]).name


def test_the_calling_tasks_outlets_get_the_event(result: DagRunResult) -> None:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetModel.uri, AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetEvent.source_dag_id == "taskflow_helper", AssetEvent.source_run_id == result.run_id)
        ).all()
    [(uri, extra)] = rows
    assert uri == "comfyui://renders/taskflow-test"
    assert extra["prompt_id"] == result.xcom("render", "prompt_id")
    assert extra["paths"] == result.return_value("render")["first"]


@pytest.mark.parametrize("option", ["deferrable", "wait_for_completion", "task_id"])
def test_options_that_cannot_apply_inside_a_task_are_refused(option: str) -> None:
    with pytest.raises(TypeError, match=option):
        run_workflow({}, **{option: True})  # refused before any context or server is needed


def test_killing_the_calling_task_cancels_its_prompt(
    standin: StandInServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Task SDK calls the @task operator's on_kill: run_workflow chains its own for the call."""
    import json

    from operators.support import FAST_EXTRA, FakeTI, delay_workflow, wait_state, wait_until

    comfy_conn = "comfy_taskflow_kill"
    connection = {"conn_type": "comfyui", "host": standin.url, "extra": FAST_EXTRA}
    monkeypatch.setenv(f"AIRFLOW_CONN_{comfy_conn.upper()}", json.dumps(connection))

    class CallingTask:
        def __init__(self) -> None:
            self.killed = False

        def on_kill(self) -> None:
            self.killed = True

    calling = CallingTask()
    ti = FakeTI("calling")
    context = {"ti": ti, "task": calling}
    outcome: list[BaseException | list[str]] = []

    def run() -> None:
        try:
            outcome.append(
                run_workflow(
                    delay_workflow(20.0, steps=200),
                    comfyui_conn_id=comfy_conn,
                    check_interval=0.1,
                    context=context,
                )  # type: ignore[arg-type]
            )
        except BaseException as exc:
            outcome.append(exc)

    import threading

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_until(lambda: "prompt_id" in ti.xcoms, what="the submission")
    wait_state(standin, ti.xcoms["prompt_id"], "running")
    calling.on_kill()  # what the SDK's SIGTERM handler does
    thread.join(timeout=20)
    assert not thread.is_alive() and isinstance(outcome[0], BaseException)
    assert calling.killed  # the task's own on_kill still ran
    assert ("POST", "/interrupt") in standin.requests
    assert "on_kill" not in vars(calling)  # restored after the call


def test_kill_reaches_every_concurrent_call(standin: StandInServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two run_workflow calls in threads of one task: the first ending must not unhook the second."""
    import json
    import threading

    from operators.support import FAST_EXTRA, FakeTI, delay_workflow, wait_until

    monkeypatch.setenv(
        "AIRFLOW_CONN_COMFY_TASKFLOW_TWO",
        json.dumps({"conn_type": "comfyui", "host": standin.url, "extra": FAST_EXTRA}),
    )

    class CallingTask:
        def on_kill(self) -> None:
            pass

    calling = CallingTask()
    ti = FakeTI("calling")
    results: dict[str, object] = {}

    def call(name: str, seconds: float) -> None:
        context = {"ti": FakeTI(f"calling_{name}"), "task": calling}
        try:
            results[name] = run_workflow(
                delay_workflow(seconds, steps=100, prefix=f"two/{name}"),
                comfyui_conn_id="comfy_taskflow_two",
                check_interval=0.05,
                context=context,  # type: ignore[arg-type]
            )
        except BaseException as exc:
            results[name] = exc

    short = threading.Thread(target=call, args=("short", 0.3), daemon=True)
    long = threading.Thread(target=call, args=("long", 20.0), daemon=True)
    short.start()
    wait_until(lambda: len(standin.submissions) == 1, what="the short submission")  # queued first
    long.start()
    short.join(timeout=20)
    assert isinstance(results.get("short"), list)
    wait_until(lambda: len(standin.submissions) == 2, what="both submissions")
    calling.on_kill()
    long.join(timeout=20)
    assert not long.is_alive() and isinstance(results["long"], BaseException)
    assert ("POST", "/interrupt") in standin.requests or ("POST", "/queue") in standin.requests
    assert "on_kill" not in vars(calling) and ti is not None

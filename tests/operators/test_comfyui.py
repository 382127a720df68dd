"""``ComfyUIPromptOperator``, ``ComfyUICancelPromptOperator``, ``ComfyUIFreeOperator`` against the stand-in.

Operators run outside a DAG run here: ``execute`` gets a minimal context (``operators.support.FakeTI``)
and the connection comes from ``AIRFLOW_CONN_<ID>`` (see ``operators.support`` for why that resolves
without a task supervisor). Waits run in a worker thread when the test must act on the server meanwhile
(restart, kill, interrupt); every such wait is bounded by the operator's ``timeout``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from PIL import Image

from airflow_comfy.exceptions import (
    ComfyUIError,
    ComfyUIExecutionError,
    ComfyUIInterruptedError,
    ComfyUIPromptLostError,
    ComfyUIResponseError,
    ComfyUITimeoutError,
)
from airflow_comfy.operators.comfyui import (
    ComfyUICancelPromptOperator,
    ComfyUIFreeOperator,
    ComfyUIPromptOperator,
    ComfyUIUploadOperator,
)
from airflow_comfy.protocol.ids import is_canonical_uuid
from airflow_comfy.testing import StandInServer
from airflow_comfy.triggers.comfyui import ComfyUIPromptTrigger
from operators.support import (
    FakeTI,
    delay_workflow,
    direct_hook,
    fail_workflow,
    first_event,
    gated_workflow,
    image_workflow,
    make_context,
    state_of,
    submit,
    wait_state,
    wait_until,
)

FAST = {"check_interval": 0.1, "lost_grace": 0.5, "timeout": 30}


def make_op(conn_id: str, workflow: Any, task_id: str = "render", **kwargs: Any) -> ComfyUIPromptOperator:
    return ComfyUIPromptOperator(
        task_id=task_id, workflow=workflow, comfyui_conn_id=conn_id, **{**FAST, **kwargs}
    )


def test_connection_resolves_from_the_environment_outside_a_task(
    standin: StandInServer, comfy_conn: str
) -> None:
    """No supervisor here: the Task SDK falls back to its secrets backends (env vars first)."""
    from airflow.sdk import BaseHook

    from airflow_comfy.hooks.comfyui import ComfyUIHook

    assert ComfyUIHook(comfy_conn).base_url == standin.url
    assert asyncio.run(BaseHook.aget_connection(comfy_conn)).conn_type == "comfyui"


# --- success -------------------------------------------------------------------------------------


def test_success_returns_server_paths_and_output_records(
    standin: StandInServer, comfy_conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Credentials on the connection must not leak into any XCom.
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{comfy_conn.upper()}",
        json.dumps({"conn_type": "comfyui", "host": standin.url, "login": "ann", "password": "s3cr3t-pw"}),
    )
    ti = FakeTI()
    op = make_op(comfy_conn, image_workflow("t/ok"))

    paths = op.execute(make_context(ti))

    assert paths == ["output/t/ok_00001_.png"]
    assert (standin.base_dir / "output" / "t" / "ok_00001_.png").is_file()
    xcoms = ti.xcoms
    assert is_canonical_uuid(xcoms["prompt_id"]) and xcoms["prompt_id"] == standin.submissions[0]
    assert xcoms["prompt_url"] == f"{standin.url}/history/{xcoms['prompt_id']}"
    assert xcoms["comfyui_url"] == standin.url
    [record] = xcoms["outputs"]
    assert record["node_id"] == "9"
    assert record["kind"] == "images"
    assert (record["filename"], record["subfolder"], record["type"]) == ("ok_00001_.png", "t", "output")
    assert record["view_url"] == f"{standin.url}/view?filename=ok_00001_.png&subfolder=t&type=output"
    assert "s3cr3t-pw" not in json.dumps(ti.pushes) and "ann@" not in json.dumps(ti.pushes)


def test_output_dir_streams_every_file_there(standin: StandInServer, comfy_conn: str, tmp_path: Path) -> None:
    out = tmp_path / "downloads"
    op = make_op(comfy_conn, image_workflow("deep/er/pic", color=0xFF0000), output_dir=str(out))

    paths = op.execute(make_context(FakeTI()))

    assert paths == [str(out / "deep" / "er" / "pic_00001_.png")]
    local = Path(paths[0])
    assert local.read_bytes() == (standin.base_dir / "output/deep/er/pic_00001_.png").read_bytes()
    with Image.open(local) as image:
        assert image.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    assert not list(out.rglob("*.part"))


@pytest.fixture
def memory_fs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Register fsspec's in-memory filesystem as ``memory://`` for ObjectStoragePath (like a provider)."""
    from airflow.sdk.io import fs
    from fsspec.implementations.memory import MemoryFileSystem

    fs._register_filesystems.cache_clear()
    monkeypatch.setitem(
        fs._BUILTIN_SCHEME_TO_FS, "memory", lambda _conn_id, _options=None: MemoryFileSystem()
    )
    yield
    fs._register_filesystems.cache_clear()


def test_output_dir_object_storage_uri(standin: StandInServer, comfy_conn: str, memory_fs: None) -> None:
    from airflow.sdk import ObjectStoragePath

    op = make_op(comfy_conn, image_workflow("obj/pic"), output_dir="memory://comfy-test-bucket/run1")

    paths = op.execute(make_context(FakeTI()))

    assert len(paths) == 1 and paths[0].startswith("memory://") and paths[0].endswith("obj/pic_00001_.png")
    stored = ObjectStoragePath(paths[0]).read_bytes()
    assert stored == (standin.base_dir / "output/obj/pic_00001_.png").read_bytes()


def test_output_kinds_filters_the_return_value_not_the_records(
    standin: StandInServer, comfy_conn: str
) -> None:
    ti = FakeTI()
    assert make_op(comfy_conn, image_workflow(), output_kinds=["audio"]).execute(make_context(ti)) == []
    assert [r["kind"] for r in ti.xcoms["outputs"]] == ["images"]


def test_prompt_xcoms_are_pushed_before_waiting(standin: StandInServer, comfy_conn: str) -> None:
    seen: dict[str, str] = {}

    def on_push(key: str, value: Any) -> None:
        if key == "prompt_id":
            seen["state"] = state_of(standin, value)

    ti = FakeTI(on_push=on_push)
    make_op(comfy_conn, delay_workflow(0.8), wait_mode="polling").execute(make_context(ti))

    assert seen["state"] in ("pending", "running")
    keys = [key for key, _ in ti.pushes]
    assert keys.index("prompt_id") < keys.index("prompt_url") < keys.index("outputs")


def test_submit_only_returns_the_prompt_id(standin: StandInServer, comfy_conn: str) -> None:
    ti = FakeTI()
    prompt_id = make_op(comfy_conn, delay_workflow(0.3), wait_for_completion=False).execute(make_context(ti))
    assert prompt_id == ti.xcoms["prompt_id"] == standin.submissions[0]
    assert "outputs" not in ti.xcoms
    assert state_of(standin, prompt_id) in ("pending", "running")
    standin.wait_idle(10)
    assert state_of(standin, prompt_id) == "success"


def test_web_ui_format_is_converted(standin: StandInServer, comfy_conn: str) -> None:
    ui = {
        "last_node_id": 2,
        "last_link_id": 1,
        "nodes": [
            {
                "id": 1,
                "type": "EmptyImage",
                "mode": 0,
                "inputs": [],
                "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
                "widgets_values": [8, 8, 1, 255],
            },
            {
                "id": 2,
                "type": "SaveImage",
                "mode": 0,
                "inputs": [{"name": "images", "type": "IMAGE", "link": 1}],
                "outputs": [],
                "widgets_values": ["ui/conv"],
            },
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"]],
        "version": 0.4,
    }
    assert make_op(comfy_conn, json.dumps(ui)).execute(make_context(FakeTI())) == [
        "output/ui/conv_00001_.png"
    ]


# --- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("wait_mode", ["websocket", "polling"])
def test_execution_error_names_node_type_exception_and_message(
    standin: StandInServer, comfy_conn: str, wait_mode: str
) -> None:
    op = make_op(comfy_conn, fail_workflow("the GPU melted"), wait_mode=wait_mode)
    with pytest.raises(ComfyUIExecutionError) as caught:
        op.execute(make_context(FakeTI()))
    message = str(caught.value)
    assert "node 5" in message and "StandInFail" in message
    assert "RuntimeError" in message and "the GPU melted" in message
    assert (caught.value.node_id, caught.value.node_type) == ("5", "StandInFail")
    assert not isinstance(caught.value, ComfyUIInterruptedError)


def test_interrupted_is_a_distinct_error(standin: StandInServer, comfy_conn: str, in_thread: Any) -> None:
    ti = FakeTI()
    future = in_thread(make_op(comfy_conn, delay_workflow(10, steps=100)).execute, make_context(ti))
    wait_until(lambda: "prompt_id" in ti.xcoms, what="submission")
    wait_state(standin, ti.xcoms["prompt_id"], "running")
    direct_hook(standin).interrupt(ti.xcoms["prompt_id"])

    with pytest.raises(ComfyUIInterruptedError, match="interrupted"):
        future.result(timeout=15)


@pytest.mark.parametrize("validate", [True, False], ids=["local-check", "server-400"])
def test_rejected_workflow_fails_without_retries(
    standin: StandInServer, comfy_conn: str, validate: bool
) -> None:
    workflow = image_workflow()
    workflow["1"]["inputs"]["width"] = "not a number"
    op = make_op(comfy_conn, workflow, validate=validate, retries=3)

    with pytest.raises(AirflowFailException) as caught:
        op.execute(make_context(FakeTI()))

    assert "width" in str(caught.value)
    assert standin.submissions == []
    assert (("POST", "/prompt") in standin.requests) is (not validate)


def test_unreadable_workflow_fails_without_retries(standin: StandInServer, comfy_conn: str) -> None:
    with pytest.raises(AirflowFailException):
        make_op(comfy_conn, "{ this is not json").execute(make_context(FakeTI()))
    assert standin.submissions == []


def test_wait_timeout_cancels_only_this_prompt(standin: StandInServer, comfy_conn: str) -> None:
    op = make_op(comfy_conn, delay_workflow(10, steps=100), timeout=0.6)
    ti = FakeTI()
    with pytest.raises(ComfyUITimeoutError):
        op.execute(make_context(ti))
    wait_state(standin, ti.xcoms["prompt_id"], "interrupted")


def test_invalid_wait_mode_is_rejected_at_parse_time() -> None:
    with pytest.raises(ValueError, match="wait_mode"):
        ComfyUIPromptOperator(task_id="x", workflow={}, wait_mode="carrier-pigeon")


# --- the server misbehaves -----------------------------------------------------------------------


@pytest.mark.parametrize("wait_mode", ["websocket", "polling"])
def test_server_restart_mid_run_is_a_clear_lost_error(
    standin: StandInServer, comfy_conn: str, in_thread: Any, wait_mode: str
) -> None:
    ti = FakeTI()
    future = in_thread(
        make_op(comfy_conn, delay_workflow(5, steps=50), wait_mode=wait_mode).execute, make_context(ti)
    )
    wait_until(lambda: "prompt_id" in ti.xcoms, what="submission")
    wait_state(standin, ti.xcoms["prompt_id"], "running")
    standin.restart()

    with pytest.raises(ComfyUIPromptLostError, match="restarted") as caught:
        future.result(timeout=15)
    assert caught.value.prompt_id == ti.xcoms["prompt_id"]


def test_server_restart_mid_run_resubmits_when_asked(
    standin: StandInServer, comfy_conn: str, in_thread: Any
) -> None:
    ti = FakeTI()
    op = make_op(comfy_conn, gated_workflow("again", prefix="t/again"), resubmit_if_lost=True)
    future = in_thread(op.execute, make_context(ti))
    standin.gates.wait_blocked("again")  # running until the restart
    standin.restart()
    standin.gates.release("again")  # the resubmitted prompt runs through

    assert future.result(timeout=20) == ["output/t/again_00001_.png"]
    assert standin.submissions == [ti.xcoms["prompt_id"]] * 2


@pytest.mark.parametrize("fault", ["drop", "silence"])
def test_websocket_trouble_falls_back_to_polling(
    standin: StandInServer, comfy_conn: str, in_thread: Any, fault: str
) -> None:
    ti = FakeTI()
    op = make_op(comfy_conn, gated_workflow(fault, prefix=f"t/{fault}"), wait_mode="websocket")
    future = in_thread(op.execute, make_context(ti))
    wait_until(lambda: "prompt_id" in ti.xcoms, what="submission")
    standin.gates.wait_blocked(fault)  # the fault comes before the end can be told
    if fault == "drop":
        standin.faults.drop_websockets()
    else:
        standin.faults.silence_websockets(True)
    standin.gates.release(fault)

    assert future.result(timeout=20) == [f"output/t/{fault}_00001_.png"]
    assert standin.submissions == [ti.xcoms["prompt_id"]]


def test_5xx_bursts_are_ridden_out(standin: StandInServer, comfy_conn: str, in_thread: Any) -> None:
    ti = FakeTI()
    standin.faults.fail_next(1, status=500, path="/prompt")  # the submission itself, once
    op = make_op(comfy_conn, gated_workflow("burst", prefix="t/burst"), wait_mode="polling")
    future = in_thread(op.execute, make_context(ti))
    wait_until(lambda: "prompt_id" in ti.xcoms, what="submission")
    standin.gates.wait_blocked("burst")  # the bursts are armed before the prompt can end
    standin.faults.fail_next(6, status=500, path="/history")
    standin.faults.fail_next(4, status=503, path="/queue")
    standin.gates.release("burst")

    assert future.result(timeout=20) == ["output/t/burst_00001_.png"]
    assert standin.submissions == [ti.xcoms["prompt_id"]]
    assert standin.faults.take_failure("/history") is None  # the whole burst was consumed


def test_server_unreachable_for_a_while_is_ridden_out(
    standin: StandInServer, comfy_conn: str, in_thread: Any
) -> None:
    """New connections are refused for a while; the task keeps waiting and then succeeds.

    (The stand-in keeps open sockets while it refuses new ones: the task's kept-alive connection
    goes on working, so its reads do not fail here; failed reads are the resilience suite's.)
    """
    ti = FakeTI()
    op = make_op(comfy_conn, gated_workflow("down", prefix="t/down"), wait_mode="polling")
    future = in_thread(op.execute, make_context(ti))
    try:
        wait_until(lambda: "prompt_id" in ti.xcoms, what="submission")
        standin.faults.refuse_connections(True)
        reads = standin.requests.count(("GET", "/queue"))
        # the refusal lasts two of the task's status reads, the prompt held all along
        wait_until(lambda: standin.requests.count(("GET", "/queue")) >= reads + 2, what="two reads")
        assert not future.done()
    finally:
        standin.faults.refuse_connections(False)
        standin.gates.release("down")
    assert future.result(timeout=60) == ["output/t/down_00001_.png"]


# --- kill: only this prompt ------------------------------------------------------------------------


def test_kill_while_pending_removes_only_this_prompt(
    standin: StandInServer, comfy_conn: str, in_thread: Any
) -> None:
    blocker = submit(standin, gated_workflow("blocker", prefix="t/blocker"))  # ours stays pending
    standin.gates.wait_blocked("blocker")
    ti = FakeTI()
    op = make_op(comfy_conn, image_workflow("t/mine"))
    future = in_thread(op.execute, make_context(ti))
    wait_until(lambda: "prompt_id" in ti.xcoms, what="submission")
    mine = ti.xcoms["prompt_id"]
    after = submit(standin, image_workflow("t/after"))
    assert state_of(standin, mine) == "pending"
    wait_until(lambda: op._run is not None and op._run.waiting, what="the operator waiting")

    op.on_kill()

    assert state_of(standin, mine) == "not_found"
    with pytest.raises(ComfyUIError):  # the killed wait ends (lost) instead of hanging
        future.result(timeout=60)
    standin.gates.release("blocker")
    standin.wait_idle(15)
    assert state_of(standin, blocker) == "success"
    assert state_of(standin, after) == "success"
    assert state_of(standin, mine) == "not_found"
    assert ("POST", "/interrupt") not in standin.requests


def test_kill_while_running_interrupts_only_this_prompt(
    standin: StandInServer, comfy_conn: str, in_thread: Any
) -> None:
    ti = FakeTI()
    op = make_op(comfy_conn, delay_workflow(10, steps=100, prefix="t/mine"))
    future = in_thread(op.execute, make_context(ti))
    wait_until(lambda: "prompt_id" in ti.xcoms, what="submission")
    mine = ti.xcoms["prompt_id"]
    others = [submit(standin, image_workflow(f"t/other{i}", color=i)) for i in range(2)]
    wait_state(standin, mine, "running")
    wait_until(lambda: op._run is not None and op._run.waiting, what="the operator waiting")

    op.on_kill()

    with pytest.raises(ComfyUIInterruptedError):
        future.result(timeout=15)
    standin.wait_idle(15)
    assert [state_of(standin, p) for p in others] == ["success", "success"]
    assert state_of(standin, mine) == "interrupted"


def test_kill_before_waiting_does_nothing(standin: StandInServer, comfy_conn: str) -> None:
    make_op(comfy_conn, image_workflow()).on_kill()
    assert ("POST", "/interrupt") not in standin.requests
    assert ("POST", "/queue") not in standin.requests


# --- retries re-attach -----------------------------------------------------------------------------


def test_retry_after_success_collects_outputs_without_resubmitting(
    standin: StandInServer, comfy_conn: str
) -> None:
    first = make_op(comfy_conn, image_workflow("t/once")).execute(make_context(FakeTI(try_number=1)))
    ti2 = FakeTI(try_number=2)
    second = make_op(comfy_conn, image_workflow("t/once")).execute(make_context(ti2))

    assert first == second == ["output/t/once_00001_.png"]
    assert len(standin.submissions) == 1
    assert ti2.xcoms["prompt_id"] == standin.submissions[0]
    assert [r["filename"] for r in ti2.xcoms["outputs"]] == ["once_00001_.png"]


@pytest.mark.parametrize("where", ["pending", "running"])
def test_retry_reattaches_to_a_queued_or_running_prompt(
    standin: StandInServer, comfy_conn: str, where: str
) -> None:
    workflow = delay_workflow(1.0, prefix=f"t/re-{where}")
    blocker = submit(standin, gated_workflow("blocker", prefix="t/blocker")) if where == "pending" else None
    prompt_id = make_op(comfy_conn, workflow, wait_for_completion=False).execute(make_context(FakeTI()))
    if where == "running":
        wait_state(standin, prompt_id, "running")
    else:
        standin.gates.wait_blocked("blocker")
        assert state_of(standin, prompt_id) == "pending"
        standin.gates.release("blocker")  # the retry finds it pending or running: it attaches either way

    paths = make_op(comfy_conn, workflow).execute(make_context(FakeTI(try_number=2)))

    assert paths == [f"output/t/re-{where}_00001_.png"]
    assert standin.submissions.count(prompt_id) == 1
    assert [p for p in standin.submissions if p != blocker] == [prompt_id]


def test_retry_after_a_failure_submits_again(standin: StandInServer, comfy_conn: str) -> None:
    with pytest.raises(ComfyUIExecutionError):
        make_op(comfy_conn, fail_workflow()).execute(make_context(FakeTI()))
    with pytest.raises(ComfyUIExecutionError):
        make_op(comfy_conn, fail_workflow()).execute(make_context(FakeTI(try_number=2)))
    assert len(standin.submissions) == 2 and len(set(standin.submissions)) == 1


def test_prompt_id_is_per_task_instance(standin: StandInServer, comfy_conn: str) -> None:
    ids = set()
    for ti in (FakeTI(map_index=0), FakeTI(map_index=1), FakeTI("other"), FakeTI(run_id="manual__2")):
        make_op(comfy_conn, image_workflow(), task_id=ti.task_id).execute(make_context(ti))
        ids.add(ti.xcoms["prompt_id"])
    assert len(ids) == 4 and sorted(ids) == sorted(standin.submissions)


def test_explicit_prompt_id_is_used(standin: StandInServer, comfy_conn: str) -> None:
    chosen = "0b5f6f9e-8a8b-4c1d-9a43-2d5c1f9b7e10"
    ti = FakeTI()
    make_op(comfy_conn, image_workflow(), prompt_id=chosen).execute(make_context(ti))
    assert ti.xcoms["prompt_id"] == chosen and standin.submissions == [chosen]


# --- deferrable ------------------------------------------------------------------------------------


def test_deferrable_path_through_execute_complete(
    standin: StandInServer, comfy_conn: str, tmp_path: Path
) -> None:
    ti = FakeTI()
    op = make_op(comfy_conn, delay_workflow(0.5, prefix="t/deferred"), deferrable=True, output_dir=tmp_path)

    with pytest.raises(TaskDeferred) as deferred:
        op.execute(make_context(ti))

    assert deferred.value.method_name == "execute_complete"
    trigger = deferred.value.trigger
    assert isinstance(trigger, ComfyUIPromptTrigger)
    assert trigger.prompt_id == ti.xcoms["prompt_id"] == standin.submissions[0]
    assert "outputs" not in ti.xcoms
    classpath, kwargs = trigger.serialize()
    json.dumps(kwargs)
    assert classpath == "airflow_comfy.triggers.comfyui.ComfyUIPromptTrigger"

    event = asyncio.run(first_event(ComfyUIPromptTrigger(**kwargs)))
    assert event["status"] == "success"
    paths = op.execute_complete(make_context(ti), event)

    assert paths == [str(tmp_path / "t" / "deferred_00001_.png")] and Path(paths[0]).is_file()
    assert ti.xcoms["outputs"][0]["filename"] == "deferred_00001_.png"


def test_deferrable_retry_of_a_finished_prompt_does_not_defer(
    standin: StandInServer, comfy_conn: str
) -> None:
    op = make_op(comfy_conn, image_workflow("t/d"), deferrable=True)
    with pytest.raises(TaskDeferred):
        op.execute(make_context(FakeTI()))
    standin.wait_idle(10)
    again = make_op(comfy_conn, image_workflow("t/d"), deferrable=True)
    assert again.execute(make_context(FakeTI(try_number=2))) == ["output/t/d_00001_.png"]
    assert len(standin.submissions) == 1


def test_deferrable_failure_event_raises_the_node_error(standin: StandInServer, comfy_conn: str) -> None:
    ti = FakeTI()
    op = make_op(comfy_conn, fail_workflow("bad tensor"), deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(make_context(ti))
    event = asyncio.run(first_event(deferred.value.trigger))
    assert event["status"] == "error"
    with pytest.raises(ComfyUIExecutionError, match=r"node 5 \(StandInFail\).*RuntimeError: bad tensor"):
        op.execute_complete(make_context(ti), event)
    assert "outputs" not in ti.xcoms


@pytest.mark.parametrize(
    ("event", "error"),
    [
        ({}, ComfyUIResponseError),
        ("success", ComfyUIResponseError),
        ({"status": "success"}, ComfyUIResponseError),
        ({"status": "weird", "prompt_id": "p"}, ComfyUIResponseError),
        ({"status": "running", "prompt_id": "p"}, ComfyUIResponseError),
        ({"status": "lost", "prompt_id": "p", "message": "gone"}, ComfyUIPromptLostError),
        ({"status": "failed", "prompt_id": "p", "message": "no connection"}, ComfyUIError),
        ({"status": "interrupted", "prompt_id": "p", "failure": {"node_id": "2"}}, ComfyUIInterruptedError),
    ],
)
def test_execute_complete_rejects_invalid_and_failed_events(
    standin: StandInServer, comfy_conn: str, event: Any, error: type[Exception]
) -> None:
    ti = FakeTI()
    with pytest.raises(error):
        make_op(comfy_conn, image_workflow()).execute_complete(make_context(ti), event)
    assert "outputs" not in ti.xcoms


def test_deferred_timeout_event_cancels_only_this_prompt(standin: StandInServer, comfy_conn: str) -> None:
    ti = FakeTI()
    op = make_op(comfy_conn, delay_workflow(10, steps=100), deferrable=True, timeout=0.5)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(make_context(ti))
    other = submit(standin, image_workflow("t/other"))
    event = asyncio.run(first_event(deferred.value.trigger))
    assert event["status"] == "timeout"

    with pytest.raises(ComfyUITimeoutError, match=re.escape(ti.xcoms["prompt_id"])):
        op.execute_complete(make_context(ti), event)

    wait_state(standin, ti.xcoms["prompt_id"], "interrupted")
    wait_state(standin, other, "success")


# --- small operators -----------------------------------------------------------------------------


def test_cancel_operator_pending_running_and_finished(standin: StandInServer, comfy_conn: str) -> None:
    running = submit(standin, delay_workflow(10, steps=100, prefix="t/r"))
    pending = submit(standin, image_workflow("t/p"))
    bystander = submit(standin, image_workflow("t/b", color=7))
    wait_state(standin, running, "running")

    def cancel(prompt_id: str) -> str:
        op = ComfyUICancelPromptOperator(task_id="cancel", prompt_id=prompt_id, comfyui_conn_id=comfy_conn)
        return op.execute(make_context(FakeTI("cancel")))

    assert cancel(pending) == "removed from the queue"
    assert cancel(running) == "interrupted"
    standin.wait_idle(15)
    assert cancel(bystander) == "nothing to do (it is success)"
    assert [state_of(standin, p) for p in (running, pending, bystander)] == [
        "interrupted",
        "not_found",
        "success",
    ]


def test_free_operator_posts_free(standin: StandInServer, comfy_conn: str) -> None:
    ComfyUIFreeOperator(task_id="free", comfyui_conn_id=comfy_conn, unload_models=False).execute(
        make_context(FakeTI("free"))
    )
    assert ("POST", "/free") in standin.requests


@pytest.mark.parametrize("resubmit", [False, True])
def test_deferred_prompt_lost_in_a_restart(standin: StandInServer, comfy_conn: str, resubmit: bool) -> None:
    ti = FakeTI()
    op = make_op(
        comfy_conn, gated_workflow("dlost", prefix="t/dlost"), deferrable=True, resubmit_if_lost=resubmit
    )
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(make_context(ti))
    prompt_id = ti.xcoms["prompt_id"]
    standin.gates.wait_blocked("dlost")  # running until the restart
    standin.restart()
    standin.gates.release("dlost")  # a resubmitted prompt runs through
    event = asyncio.run(first_event(deferred.value.trigger))
    assert event["status"] == "lost"

    if not resubmit:
        with pytest.raises(ComfyUIPromptLostError, match="restarted"):
            op.execute_complete(make_context(ti), event)
        assert standin.submissions == [prompt_id]
        return
    with pytest.raises(TaskDeferred) as again:
        op.execute_complete(make_context(ti), event)
    assert again.value.kwargs == {"resubmitted": True}
    assert standin.submissions == [prompt_id, prompt_id]
    event = asyncio.run(first_event(again.value.trigger))
    assert op.execute_complete(make_context(ti), event, **again.value.kwargs) == ["output/t/dlost_00001_.png"]
    # A second loss after the one resubmission is final.
    lost = {"status": "lost", "prompt_id": prompt_id, "message": "gone again"}
    with pytest.raises(ComfyUIPromptLostError):
        op.execute_complete(make_context(ti), lost, resubmitted=True)


def _png(path: Path, color: tuple[int, int, int]) -> Path:
    Image.new("RGB", (8, 8), color).save(path)
    return path


def test_upload_operator_returns_server_names(
    standin: StandInServer, comfy_conn: str, tmp_path: Path
) -> None:
    first = _png(tmp_path / "a.png", (1, 2, 3))
    (tmp_path / "b").mkdir()
    clash = _png(tmp_path / "b" / "a.png", (9, 9, 9))
    op = ComfyUIUploadOperator(
        task_id="up", comfyui_conn_id=comfy_conn, files=[first, clash, first], subfolder="in"
    )
    assert op.execute(make_context(FakeTI("up"))) == ["in/a.png", "in/a (1).png", "in/a.png"]
    with pytest.raises(AirflowFailException, match="no such file"):
        ComfyUIUploadOperator(
            task_id="up", comfyui_conn_id=comfy_conn, files=[tmp_path / "none.png"]
        ).execute(make_context(FakeTI("up")))


def test_inputs_are_uploaded_and_wired_before_submit(
    standin: StandInServer, comfy_conn: str, tmp_path: Path, contract_workflows: dict[str, Any]
) -> None:
    workflow = contract_workflows["load_invert_save"]
    op = make_op(
        comfy_conn,
        workflow,
        inputs={"LoadImage": _png(tmp_path / "src.png", (200, 100, 50))},
        input_subfolder="job-1",
        output_dir=tmp_path / "out",
    )
    [path] = op.execute(make_context(FakeTI()))
    with Image.open(path) as image:
        assert image.convert("RGB").getpixel((0, 0)) == (55, 155, 205)
    assert (standin.base_dir / "input" / "job-1" / "src.png").is_file()


def test_cancel_on_kill_false_leaves_the_prompt_alone(standin: StandInServer, comfy_conn: str) -> None:
    task = make_op(comfy_conn, delay_workflow(3.0, steps=30), timeout=0.5, cancel_on_kill=False)
    with pytest.raises(ComfyUITimeoutError):
        task.execute(make_context(FakeTI()))
    assert ("POST", "/interrupt") not in standin.requests
    assert ("POST", "/queue") not in standin.requests


def test_without_waiting_a_retry_returns_the_prompt_id_even_when_it_already_succeeded(
    standin: StandInServer, comfy_conn: str
) -> None:
    """A sensor templated on the return value must get a prompt id on every try, never a list."""
    first = FakeTI()
    prompt_id = make_op(comfy_conn, image_workflow("t/nowait"), wait_for_completion=False).execute(
        make_context(first)
    )
    standin.wait_idle(10)
    assert state_of(standin, prompt_id) == "success"
    retry = FakeTI(try_number=2)
    again = make_op(comfy_conn, image_workflow("t/nowait"), wait_for_completion=False).execute(
        make_context(retry)
    )
    assert again == prompt_id and retry.xcoms["prompt_id"] == prompt_id
    assert standin.submissions.count(prompt_id) == 1


def test_a_workflow_saved_on_the_server_runs_and_its_version_is_the_identity(
    standin: StandInServer, comfy_conn: str
) -> None:
    import hashlib

    from airflow_comfy.testing.userdata import save_userdata

    raw = json.dumps(image_workflow("t/saved")).encode()
    save_userdata(standin.base_dir, "workflows/team/render.json", raw)
    ti = FakeTI()
    paths = make_op(comfy_conn, "comfyui://workflows/team/render.json").execute(make_context(ti))
    assert paths == ["output/t/saved_00001_.png"]
    assert ti.xcoms["workflow_sha256"] == hashlib.sha256(raw).hexdigest()
    first = ti.xcoms["prompt_id"]
    save_userdata(
        standin.base_dir, "workflows/team/render.json", json.dumps(image_workflow("t/saved2")).encode()
    )
    again = FakeTI()
    make_op(comfy_conn, "comfyui://workflows/team/render.json").execute(make_context(again))
    assert again.xcoms["prompt_id"] != first  # a re-saved workflow is new work


def test_a_missing_saved_workflow_fails_at_once_naming_close_ones(
    standin: StandInServer, comfy_conn: str
) -> None:
    from airflow_comfy.testing.userdata import save_userdata

    save_userdata(standin.base_dir, "workflows/team/render.json", json.dumps(image_workflow()).encode())
    with pytest.raises(AirflowFailException, match=r"team/render\.json"):
        make_op(comfy_conn, "comfyui://workflows/team/rendr.json").execute(make_context(FakeTI()))
    assert standin.submissions == []

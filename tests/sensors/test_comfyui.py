"""``ComfyUIPromptSensor`` against the stand-in: poke, reschedule and deferrable modes.

The sensor runs outside a DAG run with the minimal context of ``operators.support`` (a FakeTI that
also answers ``get_first_reschedule_date``, which reschedule mode reads). Success returns the output
paths and pushes the ``outputs`` XCom; error, interrupt and lost fail with ``AirflowFailException``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowRescheduleException, TaskDeferred
from operators.support import (
    FakeTI,
    delay_workflow,
    direct_hook,
    fail_workflow,
    first_event,
    gated_workflow,
    image_workflow,
    make_context,
    submit,
    wait_state,
    wait_until,
)

from airflow_comfy.sensors.comfyui import ComfyUIPromptSensor
from airflow_comfy.testing import StandInServer
from airflow_comfy.triggers.comfyui import ComfyUIPromptTrigger

UNKNOWN = "5d0e4c3b-2a19-4f57-8e6d-3c2b1a098765"


class SensorTI(FakeTI):
    first_poke: datetime.datetime | None = None  # set to play a later poke of a rescheduled sensor

    def get_first_reschedule_date(self, _context: Any) -> datetime.datetime | None:
        return self.first_poke


def make_sensor(conn_id: str, prompt_id: str, **kwargs: Any) -> ComfyUIPromptSensor:
    options: dict[str, Any] = {"poke_interval": 0.1, "timeout": 20, "lost_grace": 0.4, "mode": "poke"}
    options.update(kwargs)
    return ComfyUIPromptSensor(task_id="wait", prompt_id=prompt_id, comfyui_conn_id=conn_id, **options)


def test_poke_mode_waits_and_returns_the_paths(standin: StandInServer, comfy_conn: str) -> None:
    prompt_id = submit(standin, delay_workflow(0.6, prefix="s/poke"))
    ti = SensorTI("wait")

    paths = make_sensor(comfy_conn, prompt_id).execute(make_context(ti))

    assert paths == ["output/s/poke_00001_.png"]
    [record] = ti.xcoms["outputs"]
    assert (record["node_id"], record["filename"], record["subfolder"]) == ("9", "poke_00001_.png", "s")


def test_poke_downloads_to_output_dir(standin: StandInServer, comfy_conn: str, tmp_path: Path) -> None:
    prompt_id = submit(standin, image_workflow("s/dl"))
    standin.wait_idle(10)
    paths = make_sensor(comfy_conn, prompt_id, output_dir=str(tmp_path)).execute(make_context(SensorTI()))
    assert paths == [str(tmp_path / "s" / "dl_00001_.png")] and Path(paths[0]).is_file()


def test_poke_is_false_while_the_prompt_is_active(standin: StandInServer, comfy_conn: str) -> None:
    prompt_id = submit(standin, delay_workflow(10, steps=100))
    sensor = make_sensor(comfy_conn, prompt_id)
    assert sensor.poke(make_context(SensorTI())) is False
    wait_state(standin, prompt_id, "running")
    assert sensor.poke(make_context(SensorTI())) is False
    direct_hook(standin).cancel_prompt(prompt_id)


def test_reschedule_mode_reschedules_then_succeeds(standin: StandInServer, comfy_conn: str) -> None:
    prompt_id = submit(standin, delay_workflow(0.5, prefix="s/res"))
    with pytest.raises(AirflowRescheduleException):
        make_sensor(comfy_conn, prompt_id, mode="reschedule").execute(make_context(SensorTI()))
    standin.wait_idle(10)
    sensor = make_sensor(comfy_conn, prompt_id, mode="reschedule")
    assert sensor.execute(make_context(SensorTI())) == ["output/s/res_00001_.png"]


@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_execution_error_fails_without_retries(standin: StandInServer, comfy_conn: str, mode: str) -> None:
    prompt_id = submit(standin, fail_workflow("out of memory"))
    standin.wait_idle(10)
    with pytest.raises(AirflowFailException, match=r"node 5 \(StandInFail\).*RuntimeError: out of memory"):
        make_sensor(comfy_conn, prompt_id, mode=mode).execute(make_context(SensorTI()))


def test_interrupted_fails_with_a_distinct_message(standin: StandInServer, comfy_conn: str) -> None:
    prompt_id = submit(standin, delay_workflow(10, steps=100))
    wait_state(standin, prompt_id, "running")
    direct_hook(standin).interrupt(prompt_id)
    wait_state(standin, prompt_id, "interrupted")
    with pytest.raises(AirflowFailException, match="interrupted") as caught:
        make_sensor(comfy_conn, prompt_id).execute(make_context(SensorTI()))
    assert "failed in" not in str(caught.value)


def test_unknown_prompt_is_lost_after_the_grace(standin: StandInServer, comfy_conn: str) -> None:
    started = time.monotonic()
    with pytest.raises(AirflowFailException, match="neither the history nor the queue"):
        make_sensor(comfy_conn, UNKNOWN, lost_grace=0.4).execute(make_context(SensorTI()))
    assert time.monotonic() - started >= 0.4


def test_reschedule_mode_never_sleeps_in_a_poke_and_counts_the_grace_from_the_first_poke(
    standin: StandInServer, comfy_conn: str
) -> None:
    from airflow.sdk.exceptions import AirflowRescheduleException

    ti = SensorTI()
    with pytest.raises(AirflowRescheduleException):  # the first poke frees the slot at once
        make_sensor(comfy_conn, UNKNOWN, mode="reschedule", lost_grace=60, timeout=3600).execute(
            make_context(ti)
        )
    ti.first_poke = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=30)
    with pytest.raises(AirflowRescheduleException):  # a later poke, still within the grace
        make_sensor(comfy_conn, UNKNOWN, mode="reschedule", lost_grace=60, timeout=3600).execute(
            make_context(ti)
        )
    ti.first_poke = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=61)
    with pytest.raises(AirflowFailException, match="a sensor cannot resubmit"):  # past the grace: lost
        make_sensor(comfy_conn, UNKNOWN, mode="reschedule", lost_grace=60, timeout=3600).execute(
            make_context(ti)
        )


def test_server_restart_while_sensing_is_lost(
    standin: StandInServer, comfy_conn: str, in_thread: Any
) -> None:
    prompt_id = submit(standin, gated_workflow("held", prefix="s/held"))
    standin.gates.wait_blocked("held")  # running until the restart ends it
    reads = standin.requests.count(("GET", "/queue"))
    future = in_thread(make_sensor(comfy_conn, prompt_id).execute, make_context(SensorTI()))
    # restart once the sensor has seen the prompt running (a status read starts with the queue)
    wait_until(lambda: standin.requests.count(("GET", "/queue")) > reads, what="the sensor's first read")
    standin.restart()
    with pytest.raises(AirflowFailException, match="restarted"):
        future.result(timeout=60)


def test_a_prompt_submitted_within_the_grace_is_found(
    standin: StandInServer, comfy_conn: str, in_thread: Any
) -> None:
    # A grace far longer than the few requests between the sensor's first "not found" and the submission.
    future = in_thread(make_sensor(comfy_conn, UNKNOWN, lost_grace=60).execute, make_context(SensorTI()))
    wait_until(lambda: ("GET", f"/history/{UNKNOWN}") in standin.requests, what="a 'not found' read")
    direct_hook(standin).submit_prompt(image_workflow("s/late"), prompt_id=UNKNOWN)
    assert future.result(timeout=60) == ["output/s/late_00001_.png"]


# --- deferrable ------------------------------------------------------------------------------------


def test_deferrable_defers_then_completes(standin: StandInServer, comfy_conn: str) -> None:
    prompt_id = submit(standin, delay_workflow(0.5, prefix="s/def"))
    ti = SensorTI()
    sensor = make_sensor(comfy_conn, prompt_id, deferrable=True)

    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(make_context(ti))

    trigger = deferred.value.trigger
    assert isinstance(trigger, ComfyUIPromptTrigger) and trigger.prompt_id == prompt_id
    _, kwargs = trigger.serialize()
    assert kwargs["cancel_on_kill"] is False  # the sensor does not own the prompt
    json.dumps(kwargs)
    event = asyncio.run(first_event(trigger))
    assert sensor.execute_complete(make_context(ti), event) == ["output/s/def_00001_.png"]
    assert ti.xcoms["outputs"][0]["filename"] == "def_00001_.png"


def test_deferrable_returns_at_once_when_already_done(standin: StandInServer, comfy_conn: str) -> None:
    prompt_id = submit(standin, image_workflow("s/done"))
    standin.wait_idle(10)
    sensor = make_sensor(comfy_conn, prompt_id, deferrable=True)
    assert sensor.execute(make_context(SensorTI())) == ["output/s/done_00001_.png"]


def test_deferrable_error_and_lost_fail_without_retries(standin: StandInServer, comfy_conn: str) -> None:
    workflow = fail_workflow("nope")  # delayed, so that the first poke finds it running
    workflow["2"] = {"class_type": "StandInDelay", "inputs": {"image": ["1", 0], "seconds": 0.5, "steps": 5}}
    workflow["5"]["inputs"]["image"] = ["2", 0]
    sensor = make_sensor(comfy_conn, submit(standin, workflow), deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(make_context(SensorTI()))
    event = asyncio.run(first_event(deferred.value.trigger))
    assert event["status"] == "error"
    with pytest.raises(AirflowFailException, match="StandInFail"):
        sensor.execute_complete(make_context(SensorTI()), event)

    lost = make_sensor(comfy_conn, UNKNOWN, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        lost.execute(make_context(SensorTI()))
    event = asyncio.run(first_event(deferred.value.trigger))
    assert event["status"] == "lost"
    with pytest.raises(AirflowFailException, match="neither the history nor the queue"):
        lost.execute_complete(make_context(SensorTI()), event)


@pytest.mark.parametrize("event", [{}, {"status": "success"}, {"status": "pending", "prompt_id": UNKNOWN}])
def test_execute_complete_rejects_invalid_events(standin: StandInServer, comfy_conn: str, event: Any) -> None:
    with pytest.raises(AirflowFailException):
        make_sensor(comfy_conn, UNKNOWN).execute_complete(make_context(SensorTI()), event)

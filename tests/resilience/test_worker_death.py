"""The worker dies mid-wait (SIGKILL: no ``on_kill``, no cleanup), then Airflow retries the task.

The first try runs ``execute`` in a subprocess that is killed while its prompt is pending or
running; the second try (same dag_id, run_id, task_id, map_index and workflow → the same prompt id)
runs here. It must re-attach: one GPU job, one submission, the outputs of that job.

Runs once per kind of credential, under the autouse ``guard`` (the subprocess's output is scanned
for the credentials too, and the killed process must be reaped).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from operators.support import direct_hook, gated_workflow, state_of, submit, wait_state

from airflow_comfy.testing import StandInServer
from resilience.support import FAST_OP, Guard, make_op, run_op, wait_until

TESTS_DIR = Path(__file__).resolve().parents[1]
FIRST_TRY = """
import json, sys
sys.path.insert(0, sys.argv[1])
from operators.support import FakeTI, make_context
from airflow_comfy.operators.comfyui import ComfyUIPromptOperator

conn_id, workflow, options = sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
ti = FakeTI("render", on_push=lambda key, value: print("XCOM", json.dumps([key, value]), flush=True))
op = ComfyUIPromptOperator(task_id="render", workflow=workflow, comfyui_conn_id=conn_id, **options)
print("RESULT", json.dumps(op.execute(make_context(ti))), flush=True)
"""


def read_until(process: subprocess.Popen[str], marker: str, timeout: float, seen: list[str]) -> str:
    """The first stdout line of ``process`` starting with ``marker`` (lines read are kept in ``seen``)."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while (remaining := deadline - time.monotonic()) > 0:
            if not selector.select(remaining):
                continue
            line = process.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith(marker):
                return line
    raise AssertionError(f"no {marker!r} from the first try within {timeout} s:\n{''.join(seen)}")


@pytest.mark.parametrize("phase", ["pending", "running"])
def test_retry_after_the_worker_died_reattaches(
    standin: StandInServer, conn: str, guard: Guard, phase: str, in_thread: Any
) -> None:
    # Another user's job keeps ours pending until the first try is dead (then it is cancelled); ours
    # is held at its gate, so it is still pending or running when the worker dies, however slow the machine.
    blocker = submit(standin, gated_workflow("blocker", prefix="w/blocker")) if phase == "pending" else None
    workflow = gated_workflow("job", prefix="w/job")
    options: dict[str, Any] = {**FAST_OP, "validate": False}
    process = subprocess.Popen(
        [sys.executable, "-c", FIRST_TRY, str(TESTS_DIR), conn, json.dumps(workflow), json.dumps(options)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ),
    )
    lines: list[str] = []
    try:
        line = read_until(process, 'XCOM ["prompt_id"', 120, lines)  # a process that imports Airflow
        prompt_id = json.loads(line.removeprefix("XCOM "))[1]
        wait_state(standin, prompt_id, phase, timeout=60)
        process.send_signal(signal.SIGKILL)  # no on_kill, no finally: the worker is just gone
        assert process.wait(5) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        assert process.stdout is not None
        lines.append(process.stdout.read())
        process.stdout.close()
        guard.text("".join(lines))
    assert state_of(standin, prompt_id) == phase  # the job outlived its worker
    if blocker:
        direct_hook(standin).cancel_prompt(blocker)
        standin.gates.release("blocker")  # the interrupt acts once the gate node is done

    second = guard.ti(try_number=2)
    retry = make_op(conn, workflow, validate=False)
    future = in_thread(run_op, retry, second)
    wait_until(lambda: retry._run is not None and retry._run.waiting, what="the retry waiting")
    standin.gates.release("job")  # only now may the job finish: the retry re-attached to it
    paths, took = future.result(timeout=60)

    assert paths == ["output/w/job_00001_.png"], paths
    assert second.xcoms["prompt_id"] == prompt_id
    assert standin.submissions.count(prompt_id) == 1  # one GPU job for both tries
    assert standin.submissions == [p for p in (blocker, prompt_id) if p]
    # (pending or already running: the blocker was cancelled just before)
    assert f"Re-attaching to prompt {prompt_id} on {standin.url}, " in guard.logs()
    assert took < 60

"""A task is killed (``on_kill`` from another thread, as Airflow's SIGTERM handler does) or its wait
times out, while its prompt is pending and while it runs: only that prompt is removed from the
queue or interrupted, the other users' prompts finish, the task ends promptly with a clear error,
and a killed prompt is never resubmitted (even with ``resubmit_if_lost=True``).

Runs once per kind of credential, under the autouse ``guard``.
"""

from __future__ import annotations

from typing import Any

import pytest
from operators.support import delay_workflow, gated_workflow, image_workflow, state_of, submit, wait_state

from airflow_comfy.exceptions import ComfyUIInterruptedError, ComfyUITimeoutError
from airflow_comfy.testing import StandInServer
from resilience.support import Guard, make_op, run_op, wait_until


@pytest.mark.parametrize("phase", ["pending", "running"])
@pytest.mark.parametrize("how", ["killed", "timed_out"])
def test_only_this_prompt_is_cancelled(
    standin: StandInServer, conn: str, guard: Guard, in_thread: Any, phase: str, how: str
) -> None:
    # The prompt ahead of ours runs until the test releases it: ours is pending for as long as needed.
    before = [submit(standin, gated_workflow("before", prefix="c/before"))] if phase == "pending" else []
    ti = guard.ti()
    mine_workflow = (
        image_workflow("c/mine") if phase == "pending" else delay_workflow(10, steps=100, prefix="c/mine")
    )
    timeout = 0.5 if how == "timed_out" else 20
    op = make_op(conn, mine_workflow, timeout=timeout, resubmit_if_lost=True, validate=False)
    future = in_thread(run_op, op, ti)
    wait_until(lambda: "prompt_id" in ti.xcoms, what="the submission")
    mine = ti.xcoms["prompt_id"]
    after = [submit(standin, image_workflow(f"c/after{i}", color=i)) for i in range(2)]
    if phase == "running":
        wait_state(standin, mine, "running", timeout=5)
    if how == "killed":
        wait_until(lambda: op._run is not None and op._run.waiting, what="the operator waiting")
        assert state_of(standin, mine) == phase
        op.on_kill()

    error, took = future.result(timeout=60)
    standin.gates.release("before")

    guard.seen(error)
    if how == "killed":
        assert isinstance(error, ComfyUIInterruptedError), error
        assert error.prompt_id == mine
        if phase == "pending":  # stopped by the operator: it says why, not "the server restarted"
            assert "the task was killed" in str(error) and standin.url in str(error)
        assert took < 30  # promptly, not after a long wait (generous: a loaded machine)
    else:
        assert isinstance(error, ComfyUITimeoutError), error
        message = str(error)
        assert f"ComfyUI prompt {mine} on {standin.url} did not finish within 0.5 s" in message
        assert "raise the timeout, or check the server's queue" in message
        assert took < 30
    standin.wait_idle(30)
    assert [state_of(standin, p) for p in before + after] == ["success"] * len(before + after)
    if phase == "pending":  # removed from the queue, never run, nothing interrupted
        assert state_of(standin, mine) == "not_found"
        assert ("POST", "/queue") in standin.requests
        assert ("POST", "/interrupt") not in standin.requests
    else:  # interrupted by id: the others, queued behind it, then ran
        assert state_of(standin, mine) == "interrupted"
        assert standin.requests.count(("POST", "/interrupt")) == 1
    assert standin.submissions == [*before, mine, *after]  # the killed prompt was not resubmitted


def test_kill_before_the_wait_starts_still_cancels(standin: StandInServer, conn: str, guard: Guard) -> None:
    """``on_kill`` arriving while the task is still submitting: the prompt is cancelled as it starts."""
    blocker = submit(standin, gated_workflow("blocker", prefix="c/blocker"))  # holds the queue
    ti = guard.ti()
    op = make_op(conn, image_workflow("c/early"), validate=False)
    op.on_kill()  # nothing is active yet: only remembered

    error, took = run_op(op, ti)
    standin.gates.release("blocker")

    guard.seen(error)
    assert isinstance(error, ComfyUIInterruptedError), error
    assert took < 30
    standin.wait_idle(30)
    assert state_of(standin, ti.xcoms["prompt_id"]) == "not_found"  # removed before it could run
    assert state_of(standin, blocker) == "success"

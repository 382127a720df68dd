"""The stand-in misbehaves while a ``ComfyUIPromptOperator`` task runs: down, flaky, slow, restarted.

Every scenario runs once per kind of credential (``auth``: Basic, Bearer, header) and under the
autouse ``guard`` (no credential in logs/output/exceptions/XComs, no thread or process left behind).
It asserts what the user sees: the task's outcome (return value, or the exception class and what its
message says) and what the server saw (submissions, status reads). Time is not asserted: a scenario
that hung would end at the operator's 20 s timeout, with a timeout error instead of the expected
outcome. The moments the faults strike are the test's (a prompt held in a ``StandInGate``).
"""

from __future__ import annotations

from typing import Any

import pytest
from operators.support import delay_workflow, gated_workflow, image_workflow, submit, wait_state

from airflow_comfy.exceptions import (
    ComfyUIConnectionError,
    ComfyUIPromptLostError,
    ComfyUITimeoutError,
)
from airflow_comfy.testing import StandInServer
from resilience.support import FAST_EXTRA, Guard, connection_env, make_op, run_op, wait_until


def retry_warnings(guard: Guard, method: str) -> list[str]:
    return [
        r.getMessage()
        for r in guard.caplog.records
        if "retrying" in r.getMessage() and f"ComfyUI {method} " in r.getMessage()
    ]


def logged(guard: Guard, text: str) -> bool:
    return text in guard.logs()


def status_reads(server: StandInServer) -> int:
    """Status reads so far: each starts with GET /queue (protocol.flows.read_status)."""
    return server.requests.count(("GET", "/queue"))


# --- the server is down ---------------------------------------------------------------------------


def test_server_down_at_submit_retries_then_fails_clearly(
    standin: StandInServer, conn: str, guard: Guard
) -> None:
    standin.faults.refuse_connections(True)
    ti = guard.ti()
    op = make_op(conn, image_workflow("r/down"), validate=False, reattach=False, unreachable_grace=0.01)

    error, took = run_op(op, ti)

    assert isinstance(error, ComfyUIConnectionError), error
    guard.seen(error)
    message = str(error)
    assert f"POST {standin.url}/prompt" in message
    assert "connection refused: is ComfyUI running, and are host and port right?" in message
    assert error.url == f"{standin.url}/prompt"
    assert "stayed unreachable for" in message and "before anything was submitted" in message
    assert len(retry_warnings(guard, "POST")) >= FAST_EXTRA["max_retries"]
    assert logged(guard, "will wait by polling")  # no /ws either
    # A generous bound, 4x a loaded machine's time: the start gives up after its 0.01 s grace, not
    # after the default 300 s one.
    assert took < 60
    assert "prompt_id" not in ti.xcoms  # nothing pushed: nothing was submitted
    standin.faults.refuse_connections(False)
    assert standin.submissions == []


def test_server_back_during_the_retries_submits_once(
    standin: StandInServer, auth: str, guard: Guard, monkeypatch: pytest.MonkeyPatch, in_thread: Any
) -> None:
    conn, _ = connection_env(
        monkeypatch, standin.url, auth, max_retries=8, retry_min_wait=0.1, retry_max_wait=0.4
    )
    standin.faults.refuse_connections(True)
    ti = guard.ti()
    op = make_op(conn, image_workflow("r/back"), validate=False, reattach=False)
    future = in_thread(run_op, op, ti)
    try:
        wait_until(lambda: len(retry_warnings(guard, "POST")) >= 2, 10, "two failed submissions")
    finally:
        standin.faults.refuse_connections(False)

    paths, _took = future.result(timeout=60)

    assert paths == ["output/r/back_00001_.png"], paths
    assert standin.submissions == [ti.xcoms["prompt_id"]]


def test_an_outage_at_the_start_is_ridden_out_within_the_grace(
    standin: StandInServer, conn: str, guard: Guard, in_thread: Any
) -> None:
    # Longer than the transport's own retries (3, 0.05 -> 0.2 s): only the start's grace saves the task.
    standin.faults.refuse_connections(True)
    ti = guard.ti()
    op = make_op(conn, image_workflow("r/outage"), validate=False, reattach=False, unreachable_grace=60)
    future = in_thread(run_op, op, ti)
    try:
        wait_until(lambda: logged(guard, "still trying until"), 15, "the outage to be ridden out")
        wait_until(lambda: logged(guard, "ComfyUI unreachable for 1 s"), 15, "a second outage line")
    finally:
        standin.faults.refuse_connections(False)

    paths, _took = future.result(timeout=30)

    assert paths == ["output/r/outage_00001_.png"], paths
    assert standin.submissions == [ti.xcoms["prompt_id"]]  # once, although many POSTs were refused


def test_an_outage_at_the_start_ends_after_the_grace(standin: StandInServer, conn: str, guard: Guard) -> None:
    standin.faults.refuse_connections(True)
    ti = guard.ti()
    op = make_op(conn, image_workflow("r/gone"), validate=False, reattach=False, unreachable_grace=1.0)

    error, _took = run_op(op, ti)

    standin.faults.refuse_connections(False)
    assert isinstance(error, ComfyUIConnectionError), error
    guard.seen(error)
    assert "unreachable grace of 1 s, before anything was submitted" in str(error)
    assert logged(guard, "still trying until")
    assert standin.submissions == []


# --- flaky and slow ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "wait_mode"), [(500, "polling"), (503, "websocket"), (429, "polling")])
def test_error_bursts_while_waiting_are_ridden_out(
    standin: StandInServer, conn: str, guard: Guard, in_thread: Any, status: int, wait_mode: str
) -> None:
    ti = guard.ti()
    op = make_op(conn, gated_workflow("burst", prefix="r/burst"), wait_mode=wait_mode, validate=False)
    future = in_thread(run_op, op, ti)
    try:
        wait_until(lambda: "prompt_id" in ti.xcoms, what="the submission")
        standin.gates.wait_blocked("burst")  # the bursts are armed before the prompt can end
        # Longer than one request's retries (3): the waiter itself must tolerate the failed reads.
        standin.faults.fail_next(10, status=status, path="/history")
        standin.faults.fail_next(6, status=status, path="/queue")
    finally:
        standin.gates.release("burst")

    paths, _took = future.result(timeout=60)

    assert paths == ["output/r/burst_00001_.png"], paths
    assert standin.submissions == [ti.xcoms["prompt_id"]]
    assert standin.faults.take_failure("/history") is None  # the whole burst was met
    assert f"{standin.url}/history/{ti.xcoms['prompt_id']} answered HTTP {status}" in guard.logs()


def test_slow_server_within_the_read_timeout_succeeds(
    standin: StandInServer, auth: str, guard: Guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn, _ = connection_env(monkeypatch, standin.url, auth, read_timeout=1.5)
    standin.faults.delay_responses(0.15)
    ti = guard.ti()

    paths, _took = run_op(make_op(conn, image_workflow("r/slow"), check_interval=0.2), ti)

    assert paths == ["output/r/slow_00001_.png"], paths
    assert standin.submissions == [ti.xcoms["prompt_id"]]


def test_slow_server_beyond_the_read_timeout_fails_clearly(
    standin: StandInServer, auth: str, guard: Guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn, _ = connection_env(monkeypatch, standin.url, auth, read_timeout=0.3, max_retries=2)
    standin.faults.delay_responses(1.0)
    ti = guard.ti()

    error, took = run_op(make_op(conn, image_workflow("r/slower"), validate=False), ti)

    assert isinstance(error, ComfyUITimeoutError), error
    guard.seen(error)
    message = str(error)
    assert f"ComfyUI did not answer POST {standin.url}/prompt" in message
    assert "within 0.3 s" in message and "raise extra.read_timeout" in message
    # A POST that may have arrived is never sent again (it could run twice); it waited the read timeout.
    assert standin.requests.count(("POST", "/prompt")) == 1
    assert took >= 0.3
    # A generous bound (many times a loaded machine's time): the task ends after its read timeouts,
    # not after trying for the unreachable grace (300 s by default).
    assert took < 60
    assert standin.submissions == []


# --- the WebSocket misbehaves -------------------------------------------------------------------------


def test_websocket_dropped_mid_run_falls_back_to_polling(
    standin: StandInServer, conn: str, guard: Guard, in_thread: Any
) -> None:
    ti = guard.ti()
    op = make_op(conn, gated_workflow("drop", prefix="r/drop"), validate=False)
    future = in_thread(run_op, op, ti)
    try:
        wait_until(lambda: "prompt_id" in ti.xcoms, what="the submission")  # its socket opened before
        standin.gates.wait_blocked("drop")  # mid-run, until the test says go
        reads_before = status_reads(standin)
        standin.faults.drop_websockets()
        # it polls, every check_interval, while the prompt is still held
        wait_until(lambda: status_reads(standin) - reads_before >= 3, what="three status reads")
    finally:
        standin.gates.release("drop")

    paths, _took = future.result(timeout=60)

    assert paths == ["output/r/drop_00001_.png"], paths
    assert standin.submissions == [ti.xcoms["prompt_id"]]
    assert logged(guard, "continuing by polling")


def test_silent_websocket_falls_back_to_polling(
    standin: StandInServer, conn: str, guard: Guard, in_thread: Any
) -> None:
    standin.faults.silence_websockets(True)  # connects fine, never says a word
    ti = guard.ti()
    future = in_thread(run_op, make_op(conn, gated_workflow("mute", prefix="r/mute"), validate=False), ti)
    try:
        standin.gates.wait_blocked("mute")
        # while the socket is silent the status is read every check_interval
        wait_until(lambda: status_reads(standin) >= 3, what="three status reads")
    finally:
        standin.gates.release("mute")

    paths, _took = future.result(timeout=60)  # the end, which the socket never told, found by a read

    assert paths == ["output/r/mute_00001_.png"], paths
    assert standin.submissions == [ti.xcoms["prompt_id"]]


# --- the server restarts ------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["pending", "running"])
@pytest.mark.parametrize("resubmit", [False, True], ids=["lost", "resubmit"])
def test_server_restart_loses_the_prompt(
    standin: StandInServer, conn: str, guard: Guard, in_thread: Any, phase: str, resubmit: bool
) -> None:
    # Both prompts are held in gates until after the restart: the phase is the test's, not a race.
    blocker = submit(standin, gated_workflow("blocker", prefix="r/blocker")) if phase == "pending" else None
    ti = guard.ti()
    op = make_op(conn, gated_workflow("op", prefix="r/restart"), resubmit_if_lost=resubmit, validate=False)
    future = in_thread(run_op, op, ti)
    try:
        wait_until(lambda: "prompt_id" in ti.xcoms, what="the submission")
        prompt_id = ti.xcoms["prompt_id"]
        if phase == "pending":
            standin.gates.wait_blocked("blocker")
            wait_state(standin, prompt_id, "pending")
        else:
            standin.gates.wait_blocked("op")
        standin.restart()
    finally:
        standin.gates.release("op")  # a resubmitted prompt runs through
        standin.gates.release("blocker")

    result, _took = future.result(timeout=60)

    before = [blocker] if blocker else []
    if resubmit:
        assert result == ["output/r/restart_00001_.png"], result
        assert standin.submissions == [*before, prompt_id, prompt_id]  # once more, and only once
        assert logged(guard, "lost by the server; submitting it once more")
    else:
        assert isinstance(result, ComfyUIPromptLostError), result
        guard.seen(result)
        assert result.prompt_id == prompt_id
        message = str(result)
        assert (
            f"ComfyUI prompt {prompt_id} is in neither the history nor the queue of {standin.url}" in message
        )
        assert "the server restarted or its history was cleared" in message
        assert "run the task again" in message
        assert standin.submissions == [*before, prompt_id]


# --- a caching proxy keeps answering a stale {} --------------------------------------------------------


@pytest.mark.parametrize("wait_mode", ["polling", "websocket"])
def test_a_stale_empty_history_is_not_called_lost(
    standin: StandInServer, conn: str, guard: Guard, wait_mode: str
) -> None:
    standin.faults.serve_stale_history(True)
    ti = guard.ti()
    op = make_op(
        conn,
        delay_workflow(0.3, prefix="r/stale"),
        wait_mode=wait_mode,
        resubmit_if_lost=True,
        validate=False,
    )

    paths, _took = run_op(op, ti)

    assert paths == ["output/r/stale_00001_.png"], paths
    assert standin.submissions == [ti.xcoms["prompt_id"]]  # never "lost", never sent twice
    assert ("GET", "/history") in standin.requests  # the listing confirmed it

"""PromptWaiter against the stand-in: WebSocket, polling fallback, lost prompts, bounds.

The moments these tests act on (a dropped socket, a restart, the end of an outage) are chosen by
the test, not by a timer: a ``StandInGate`` holds the prompt, the waiter's own progress callback or
read counter says it is waiting. Lower time bounds come from the waiter's configured graces; no
test bounds how fast the machine is.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from airflow_comfy.exceptions import (
    ComfyUIConnectionError,
    ComfyUIExecutionError,
    ComfyUIInterruptedError,
    ComfyUIPromptLostError,
    ComfyUITimeoutError,
)
from airflow_comfy.hooks.waiting import PromptWaiter
from airflow_comfy.protocol.states import PromptState
from hooks.hook_helpers import empty_save, failing, fast_hook, gated_save, slow_save, wait_until

FAST_WAIT = {"check_interval": 0.1, "lost_grace": 0.5, "timeout": 20}


def _submit_with_socket(hook, workflow, client_id="waiter"):
    ws = hook.websocket(client_id).connect()
    answer = hook.submit_prompt(workflow, client_id=client_id)
    return answer["prompt_id"], ws


def _in_thread(fn) -> tuple[Future[Any], ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="waiter-test")
    return pool.submit(fn), pool


def test_websocket_success(hook, standin):
    prompt_id, ws = _submit_with_socket(hook, empty_save(batch=2))
    lines = []
    status = hook.wait_for_prompt(
        prompt_id,
        client_id="waiter",
        websocket=ws,
        mode="websocket",
        total_nodes=2,
        on_progress=lines.append,
        **FAST_WAIT,
    )
    assert status.state is PromptState.SUCCESS and len(status.outputs) == 2
    assert not ws.connected  # the waiter closes the socket it was given
    assert lines  # progress was reported at least once


def test_websocket_opened_by_the_waiter(hook, standin):
    answer = hook.submit_prompt(gated_save("own"), client_id="own-socket")
    # A long check_interval: no silence long enough for a poll to find the result first.
    waiter = PromptWaiter(
        hook.client(), answer["prompt_id"], client_id="own-socket", check_interval=30.0, timeout=60
    )
    future, pool = _in_thread(waiter.wait)
    try:
        # The prompt is held until the waiter's socket got its first message (the server's status):
        # the end marker cannot be sent before the socket is there to receive it.
        wait_until(lambda: waiter.tracker.queue_remaining is not None, timeout=30)
    finally:
        standin.gates.release("own")
        pool.shutdown(wait=True)
    assert future.result().state is PromptState.SUCCESS
    assert waiter.tracker.finished  # the end marker came over the socket


def test_websocket_execution_error(hook, standin):
    prompt_id, ws = _submit_with_socket(hook, failing("broken on purpose"))
    with pytest.raises(ComfyUIExecutionError) as info:
        hook.wait_for_prompt(prompt_id, client_id="waiter", websocket=ws, **FAST_WAIT)
    assert info.value.prompt_id == prompt_id and info.value.node_id == "2"
    assert "failed in node 2 (StandInFail): RuntimeError: broken on purpose" in str(info.value)


def test_failure_returned_when_asked(hook, standin):
    prompt_id, ws = _submit_with_socket(hook, failing())
    status = PromptWaiter(
        hook.client(), prompt_id, client_id="waiter", websocket=ws, raise_on_failure=False, **FAST_WAIT
    ).wait()
    assert status.state is PromptState.ERROR and status.failure["node_type"] == "StandInFail"


def test_websocket_interrupted(hook, standin):
    prompt_id, ws = _submit_with_socket(hook, slow_save(3.0, steps=60))
    other = fast_hook(standin.url)

    def interrupt_when_running():
        wait_until(lambda: other.get_prompt_status(prompt_id).state is PromptState.RUNNING, timeout=30)
        other.interrupt(prompt_id)

    thread = threading.Thread(target=interrupt_when_running)
    thread.start()
    try:
        with pytest.raises(ComfyUIInterruptedError) as info:
            hook.wait_for_prompt(prompt_id, client_id="waiter", websocket=ws, **FAST_WAIT)
    finally:
        thread.join(10)
    assert info.value.prompt_id == prompt_id and "was interrupted in node 2 (StandInDelay)" in str(info.value)


def test_a_stop_that_interrupted_the_prompt_is_reported_as_the_stop(hook, standin):
    """A kill sets the stop signal, then interrupts the prompt: a status read landing between the
    interrupt and the waiter's next look at the signal sees "interrupted", the kill's own doing."""
    prompt_id = hook.submit_prompt(slow_save(10.0, steps=100))["prompt_id"]
    wait_until(lambda: hook.get_prompt_status(prompt_id).state is PromptState.RUNNING, timeout=30)
    hook.interrupt(prompt_id)
    wait_until(lambda: hook.get_prompt_status(prompt_id).state is PromptState.INTERRUPTED, timeout=30)
    looks = iter([False])  # the signal is set just after the waiter's first look at it
    waiter = PromptWaiter(
        hook.client(), prompt_id, mode="polling", should_stop=lambda: next(looks, True), **FAST_WAIT
    )
    with pytest.raises(ComfyUIInterruptedError, match="the task was killed or stopped"):
        waiter.wait()


def test_websocket_drop_mid_run_still_gets_the_result(hook, standin):
    prompt_id, ws = _submit_with_socket(hook, gated_save("drop"))
    waiter = PromptWaiter(hook.client(), prompt_id, client_id="waiter", websocket=ws, **FAST_WAIT)
    future, pool = _in_thread(waiter.wait)
    try:
        standin.gates.wait_blocked("drop")  # mid-run: the end marker has not been sent
        wait_until(lambda: waiter.tracker.started)  # the waiter reads this socket
        standin.faults.drop_websockets()
        reads = waiter.reads
        wait_until(lambda: waiter.reads >= reads + 2)  # dropped: it reads the status over HTTP
    finally:
        standin.gates.release("drop")
        pool.shutdown(wait=True)
    status = future.result()  # within the wait's timeout: a hang on the dead socket would time out
    assert status.state is PromptState.SUCCESS and status.outputs
    assert not waiter.tracker.finished  # the end came from a status read, not over the dropped socket


def test_silent_websocket_falls_back_to_polling(hook, standin):
    standin.faults.silence_websockets(True)
    prompt_id, ws = _submit_with_socket(hook, slow_save(0.3, steps=3))
    waiter = PromptWaiter(hook.client(), prompt_id, client_id="waiter", websocket=ws, **FAST_WAIT)
    status = waiter.wait()
    assert status.state is PromptState.SUCCESS
    assert not waiter.tracker.finished  # the socket said nothing: polling found the result


def test_polling_mode(hook, standin):
    answer = hook.submit_prompt(slow_save(0.3, steps=3))
    count = len(standin.requests)
    status = hook.wait_for_prompt(answer["prompt_id"], mode="polling", **FAST_WAIT)
    assert status.state is PromptState.SUCCESS
    assert any(path == "/queue" for _m, path in standin.requests[count:])


def test_polling_mode_closes_a_socket_it_was_given(hook, standin):
    prompt_id, ws = _submit_with_socket(hook, empty_save())
    waiter = PromptWaiter(
        hook.client(), prompt_id, client_id="waiter", websocket=ws, mode="polling", **FAST_WAIT
    )
    assert waiter.wait().state is PromptState.SUCCESS
    assert not ws.connected and not waiter.tracker.started


def test_websocket_mode_without_client_id_polls(hook, standin):
    answer = hook.submit_prompt(empty_save())
    assert hook.wait_for_prompt(answer["prompt_id"], **FAST_WAIT).state is PromptState.SUCCESS


def test_websocket_that_cannot_open_falls_back_to_polling(hook, standin, monkeypatch):
    answer = hook.submit_prompt(empty_save(), client_id="nows")

    def refuse(self):
        raise ComfyUIConnectionError("Cannot open the ComfyUI WebSocket (test)", url="")

    monkeypatch.setattr("airflow_comfy.hooks.websocket.ComfyUIWebSocket.connect", refuse)
    status = hook.wait_for_prompt(answer["prompt_id"], client_id="nows", **FAST_WAIT)
    assert status.state is PromptState.SUCCESS


def _restart_at_first_report(standin) -> tuple[list[float], Any]:
    """An ``on_progress`` that restarts the server at the waiter's first report (it is waiting)."""
    restarted: list[float] = []

    def report(_line: str) -> None:
        if not restarted:
            standin.restart()
            restarted.append(time.monotonic())

    return restarted, report


@pytest.mark.parametrize("mode", ["websocket", "polling"])
def test_restart_while_pending_is_lost(hook, standin, mode):
    running, ws = _submit_with_socket(hook, gated_save("hold"))
    standin.gates.wait_blocked("hold")  # held until the restart: the next prompt stays pending
    pending = hook.submit_prompt(empty_save(), client_id="waiter")["prompt_id"]
    assert hook.get_prompt_status(pending).state is PromptState.PENDING
    restarted, report = _restart_at_first_report(standin)
    with pytest.raises(ComfyUIPromptLostError) as info:
        hook.wait_for_prompt(
            pending, client_id="waiter", websocket=ws, mode=mode, on_progress=report, **FAST_WAIT
        )
    lost_after = time.monotonic() - restarted[0]
    assert info.value.prompt_id == pending
    assert "in neither the history nor the queue" in str(info.value) and standin.url in str(info.value)
    # Called lost only once "not found" lasted the configured grace (a timeout would be another error).
    assert lost_after >= FAST_WAIT["lost_grace"]
    assert hook.get_prompt_status(running).state is PromptState.NOT_FOUND


@pytest.mark.parametrize("mode", ["websocket", "polling"])
def test_restart_while_running_is_lost(hook, standin, mode):
    prompt_id, ws = _submit_with_socket(hook, gated_save("hold"))
    standin.gates.wait_blocked("hold")  # running, and it stays so until the restart
    restarted, report = _restart_at_first_report(standin)
    with pytest.raises(ComfyUIPromptLostError) as info:
        hook.wait_for_prompt(
            prompt_id, client_id="waiter", websocket=ws, mode=mode, on_progress=report, **FAST_WAIT
        )
    assert info.value.prompt_id == prompt_id
    assert time.monotonic() - restarted[0] >= FAST_WAIT["lost_grace"]


# The prompts below are held in a gate for the whole wait: they cannot end before the deadline, however
# slow the machine. The upper bounds catch a wait that outlives its deadline by far (e.g. until the held
# node gives up after 60 s), with room for a machine many times slower than an idle one.


def test_timeout_bound(hook, standin):
    prompt_id, ws = _submit_with_socket(hook, gated_save("never"))
    start = time.monotonic()
    try:
        with pytest.raises(ComfyUITimeoutError) as info:
            hook.wait_for_prompt(prompt_id, client_id="waiter", websocket=ws, timeout=0.6, check_interval=0.1)
        elapsed = time.monotonic() - start
    finally:
        standin.gates.release("never")
    assert 0.6 <= elapsed < 0.6 + 15
    assert f"ComfyUI prompt {prompt_id} on {standin.url} did not finish within 0.6 s" in str(info.value)


def test_timeout_bound_when_polling(hook, standin):
    answer = hook.submit_prompt(gated_save("never"))
    start = time.monotonic()
    try:
        with pytest.raises(ComfyUITimeoutError):
            hook.wait_for_prompt(answer["prompt_id"], mode="polling", timeout=0.5, check_interval=0.2)
        elapsed = time.monotonic() - start
    finally:
        standin.gates.release("never")
    assert 0.5 <= elapsed < 0.5 + 15


def test_short_outage_is_tolerated(hook, standin):
    answer = hook.submit_prompt(slow_save(0.6, steps=6))
    standin.faults.refuse_connections(True)  # (kept-alive sockets survive: wait with a fresh hook)
    waiting_hook = fast_hook(standin.url, max_retries=0)
    waiter = PromptWaiter(
        waiting_hook.client(), answer["prompt_id"], mode="polling", unreachable_grace=60, **FAST_WAIT
    )
    future, pool = _in_thread(waiter.wait)
    try:
        wait_until(lambda: waiter.reads >= 2, timeout=30)  # refused twice: the outage was met
        count = len(standin.requests)
    finally:
        standin.faults.refuse_connections(False)
        pool.shutdown(wait=True)
    assert future.result().state is PromptState.SUCCESS
    assert standin.requests[count:]  # it got through once the server listened again


def test_long_outage_ends_the_wait(hook, standin):
    answer = hook.submit_prompt(slow_save(2.0, steps=20))
    standin.faults.refuse_connections(True)
    waiting_hook = fast_hook(standin.url, max_retries=0)  # a fresh session: no kept-alive socket
    try:
        start = time.monotonic()
        with pytest.raises(ComfyUIConnectionError, match="connection refused"):
            PromptWaiter(
                waiting_hook.client(), answer["prompt_id"], mode="polling", unreachable_grace=0.4, **FAST_WAIT
            ).wait()
        # Not before the configured grace; ending at the 20 s deadline instead would be a timeout error.
        assert time.monotonic() - start >= 0.4
    finally:
        standin.faults.refuse_connections(False)
    hook.interrupt(answer["prompt_id"])


def test_non_retryable_error_while_waiting_is_raised(hook, standin):
    answer = hook.submit_prompt(slow_save(1.0, steps=10))
    standin.faults.fail_next(100, status=401, path="/history")
    try:
        with pytest.raises(Exception, match="HTTP 401"):
            hook.wait_for_prompt(answer["prompt_id"], mode="polling", **FAST_WAIT)
    finally:
        standin.faults.reset()
    hook.interrupt(answer["prompt_id"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "sse"}, "wait mode must be one of"),
        ({"timeout": 0}, "positive"),
        ({"check_interval": -1}, "positive"),
    ],
)
def test_bad_arguments(hook, kwargs, match):
    with pytest.raises(ValueError, match=match):
        PromptWaiter(hook.client(), "p", **kwargs)

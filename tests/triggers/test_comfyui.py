"""``ComfyUIPromptTrigger`` and the async client against the stand-in, each run with ``asyncio.run``.

Every run is bounded by ``asyncio.wait_for``; the connection resolves through ``aget_connection``
and the ``AIRFLOW_CONN_<ID>`` environment variable (see ``operators.support``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from typing import Any

import pytest
from airflow.sdk._shared.module_loading import import_string
from operators.support import (
    delay_workflow,
    direct_hook,
    fail_workflow,
    gated_workflow,
    image_workflow,
    state_of,
    submit,
    wait_state,
)

from airflow_comfy.hooks import async_client
from airflow_comfy.protocol.waiting import WaitOutcome
from airflow_comfy.testing import StandInServer
from airflow_comfy.triggers import poller as poller_module
from airflow_comfy.triggers.comfyui import EVENT_STATUSES, ComfyUIPromptTrigger

UNKNOWN = "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"


def make_trigger(conn_id: str, prompt_id: str, **kwargs: Any) -> ComfyUIPromptTrigger:
    options: dict[str, Any] = {
        "end_time": time.time() + 30,
        "poll_interval": 0.1,
        "lost_grace": 0.4,
        "unreachable_grace": 5,
    }
    options.update(kwargs)
    return ComfyUIPromptTrigger(prompt_id=prompt_id, comfyui_conn_id=conn_id, **options)


async def events_of(trigger: ComfyUIPromptTrigger, timeout: float = 20.0) -> list[dict[str, Any]]:
    """Every event the trigger yields until its generator ends (the invariant: exactly one)."""

    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return await asyncio.wait_for(collect(), timeout)


async def until(predicate: Any, what: str, timeout: float = 30.0) -> None:
    """Wait (bounded) on the event loop until ``predicate()`` holds: a moment, not a delay."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"{what} not reached within {timeout} s"
        await asyncio.sleep(0.01)


def only_event(trigger: ComfyUIPromptTrigger, timeout: float = 20.0) -> dict[str, Any]:
    events = asyncio.run(events_of(trigger, timeout))
    assert len(events) == 1, events
    event = events[0]
    assert event["status"] in EVENT_STATUSES and event["prompt_id"] == trigger.prompt_id
    json.dumps(event)
    return event


def test_serialize_round_trip_is_json_safe(comfy_conn: str) -> None:
    trigger = make_trigger(comfy_conn, UNKNOWN, end_time=1_900_000_000.5, cancel_on_kill=False)
    classpath, kwargs = trigger.serialize()
    assert json.loads(json.dumps(kwargs)) == kwargs
    rebuilt = import_string(classpath)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert kwargs["end_time"] == 1_900_000_000.5  # wall-clock epoch seconds, not monotonic


def test_success_event_carries_outputs(standin: StandInServer, comfy_conn: str) -> None:
    prompt_id = submit(standin, delay_workflow(0.5, prefix="tr/ok"))
    event = only_event(make_trigger(comfy_conn, prompt_id))
    assert event["status"] == "success" and event["base_url"] == standin.url
    status = WaitOutcome.from_payload(event).result()
    assert [(r.node_id, r.kind, r.filename, r.subfolder, r.type) for r in status.outputs] == [
        ("9", "images", "ok_00001_.png", "tr", "output")
    ]


def test_error_and_interrupted_events(standin: StandInServer, comfy_conn: str) -> None:
    failing = submit(standin, fail_workflow("kaput"))
    event = only_event(make_trigger(comfy_conn, failing))
    assert event["status"] == "error"
    assert event["failure"]["node_id"] == "5" and event["failure"]["exception_message"].strip() == "kaput"

    slow = submit(standin, delay_workflow(10, steps=100))
    wait_state(standin, slow, "running")
    direct_hook(standin).interrupt(slow)
    assert only_event(make_trigger(comfy_conn, slow))["status"] == "interrupted"


def test_unknown_prompt_is_lost_after_the_grace(standin: StandInServer, comfy_conn: str) -> None:
    started = time.monotonic()
    event = only_event(make_trigger(comfy_conn, UNKNOWN, lost_grace=0.5))
    assert event["status"] == "lost" and "neither the history nor the queue" in event["message"]
    # Not before the configured grace (waiting until end_time instead would be a "timeout" event).
    assert time.monotonic() - started >= 0.5


def test_restart_mid_run_is_lost(standin: StandInServer, comfy_conn: str) -> None:
    prompt_id = submit(standin, gated_workflow("held", prefix="tr/held"))
    standin.gates.wait_blocked("held")  # running until the restart ends it
    reads = standin.requests.count(("GET", "/queue"))

    async def scenario() -> list[dict[str, Any]]:
        task = asyncio.ensure_future(events_of(make_trigger(comfy_conn, prompt_id)))
        await until(lambda: standin.requests.count(("GET", "/queue")) > reads, "the trigger's first read")
        assert not task.done()
        await asyncio.to_thread(standin.restart)
        return await task

    [event] = asyncio.run(scenario())
    assert event["status"] == "lost" and "restarted" in event["message"]


def test_deadline_gives_a_timeout_event(standin: StandInServer, comfy_conn: str) -> None:
    # Held in a gate: the prompt cannot end first, and a trigger that overslept its end_time would
    # report the held node's failure (after 60 s), not a timeout.
    prompt_id = submit(standin, gated_workflow("never", prefix="tr/never"))
    started = time.monotonic()
    event = only_event(make_trigger(comfy_conn, prompt_id, end_time=time.time() + 0.5))
    assert event["status"] == "timeout" and prompt_id in event["message"]
    assert time.monotonic() - started >= 0.5
    standin.gates.release("never")


def test_unreachable_server_fails_after_its_grace(standin: StandInServer, comfy_conn: str) -> None:
    prompt_id = submit(standin, delay_workflow(10, steps=100))
    standin.faults.refuse_connections(True)
    try:
        event = only_event(make_trigger(comfy_conn, prompt_id, unreachable_grace=0.5))
    finally:
        standin.faults.refuse_connections(False)
    assert event["status"] == "failed" and standin.url in event["message"]
    direct_hook(standin).cancel_prompt(prompt_id)


def test_short_outage_and_5xx_bursts_are_ridden_out(standin: StandInServer, comfy_conn: str) -> None:
    prompt_id = submit(standin, gated_workflow("burst", prefix="tr/burst"))
    standin.gates.wait_blocked("burst")  # the faults come while the prompt runs

    async def scenario() -> list[dict[str, Any]]:
        task = asyncio.ensure_future(events_of(make_trigger(comfy_conn, prompt_id)))
        try:
            await until(lambda: _pollers_of(standin.url), "the trigger's poller")
            await until(lambda: _poller_of(standin.url).rounds >= 1, "a first round")
            await asyncio.to_thread(standin.faults.refuse_connections, True)
            rounds = _poller_of(standin.url).rounds
            await until(lambda: _poller_of(standin.url).rounds >= rounds + 2, "two rounds while refused")
            await asyncio.to_thread(standin.faults.refuse_connections, False)
            standin.faults.fail_next(5, status=500, path="/history")
            standin.faults.fail_next(3, status=502, path="/queue")
        finally:
            standin.gates.release("burst")
        return await task

    [event] = asyncio.run(scenario())
    assert event["status"] == "success"


def test_missing_connection_is_a_failed_event(standin: StandInServer) -> None:
    event = only_event(make_trigger("comfy_no_such_connection", UNKNOWN))
    assert event["status"] == "failed" and "comfy_no_such_connection" in event["message"]


def test_polls_at_the_interval_not_in_a_busy_loop(
    standin: StandInServer, comfy_conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six rounds of the poller, timed by its own clock: however late the trigger starts on a loaded
    machine, rounds on the interval's grid are at least an interval apart."""
    submit(standin, gated_workflow("held", prefix="tr/held"))
    standin.gates.wait_blocked("held")
    prompt_id = submit(standin, image_workflow("tr/queued"))  # queued behind it for the whole test
    before = len(standin.requests)
    starts: list[float] = []
    real_round = poller_module.SharedPoller._round

    async def timed_round(self: poller_module.SharedPoller, due: list[Any]) -> None:
        starts.append(self.loop.time())
        await real_round(self, due)

    monkeypatch.setattr(poller_module.SharedPoller, "_round", timed_round)

    async def scenario() -> int:
        task = asyncio.ensure_future(events_of(make_trigger(comfy_conn, prompt_id, poll_interval=0.25)))
        try:
            await until(lambda: len(starts) >= 6, "six rounds")
            return _poller_of(standin.url).woken_rounds
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    woken = asyncio.run(scenario())
    # A round woken by a queue signal (the listener's socket opening) may come early; the others
    # sit on the 0.25 s grid. A busy loop would make the six within milliseconds.
    assert woken <= 2
    assert starts[5] - starts[0] >= (5 - woken) * (0.25 - 0.01)
    seen = {p for _m, p in standin.requests[before:] if p != "/ws"}
    assert seen == {"/queue"}  # one queue read a round; the prompt is queued: no history read
    standin.gates.release("held")


# --- on_kill ---------------------------------------------------------------------------------------


def test_on_kill_interrupts_only_its_running_prompt(standin: StandInServer, comfy_conn: str) -> None:
    mine = submit(standin, delay_workflow(10, steps=100, prefix="tr/mine"))
    others = [submit(standin, image_workflow(f"tr/other{i}", color=i)) for i in range(2)]
    wait_state(standin, mine, "running")

    asyncio.run(asyncio.wait_for(make_trigger(comfy_conn, mine).on_kill(), 10))

    standin.wait_idle(15)
    assert state_of(standin, mine) == "interrupted"
    assert [state_of(standin, p) for p in others] == ["success", "success"]


def test_on_kill_removes_only_its_pending_prompt(standin: StandInServer, comfy_conn: str) -> None:
    blocker = submit(standin, gated_workflow("blocker", prefix="tr/blocker"))  # holds ours pending
    mine = submit(standin, image_workflow("tr/mine"))
    after = submit(standin, image_workflow("tr/after", color=3))

    asyncio.run(asyncio.wait_for(make_trigger(comfy_conn, mine).on_kill(), 30))
    standin.gates.release("blocker")

    standin.wait_idle(15)
    assert state_of(standin, mine) == "not_found"
    assert (state_of(standin, blocker), state_of(standin, after)) == ("success", "success")
    assert ("POST", "/interrupt") not in standin.requests


def test_on_kill_without_cancel_on_kill_leaves_the_prompt(standin: StandInServer, comfy_conn: str) -> None:
    prompt_id = submit(standin, gated_workflow("left", prefix="tr/left"))
    standin.gates.wait_blocked("left")
    asyncio.run(make_trigger(comfy_conn, prompt_id, cancel_on_kill=False).on_kill())
    assert state_of(standin, prompt_id) == "running"  # left alone
    standin.gates.release("left")
    standin.wait_idle(10)
    assert state_of(standin, prompt_id) == "success"


# --- many triggers -------------------------------------------------------------------------------


def test_many_triggers_in_one_loop_share_one_client(
    standin: StandInServer, comfy_conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: Counter[int] = Counter()
    real_client = async_client.httpx.AsyncClient

    class CountingClient(real_client):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            created[id(asyncio.get_running_loop())] += 1
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(async_client.httpx, "AsyncClient", CountingClient)
    prompt_ids = [submit(standin, image_workflow(f"tr/many{i}", color=i)) for i in range(50)]

    async def scenario() -> list[list[dict[str, Any]]]:
        triggers = [make_trigger(comfy_conn, p, poll_interval=0.2) for p in prompt_ids]
        return await asyncio.wait_for(asyncio.gather(*(events_of(t) for t in triggers)), 60)

    results = asyncio.run(scenario())

    assert [len(events) for events in results] == [1] * 50
    assert {events[0]["status"] for events in results} == {"success"}
    assert sorted(events[0]["prompt_id"] for events in results) == sorted(prompt_ids)
    assert sum(created.values()) == 1


def test_triggers_in_successive_event_loops(standin: StandInServer, comfy_conn: str) -> None:
    """dag.test() and tests run each trigger in a new loop: a client of a closed loop is never reused."""
    for i in range(4):
        prompt_id = submit(standin, image_workflow(f"tr/loop{i}", color=i))
        assert only_event(make_trigger(comfy_conn, prompt_id))["status"] == "success"


# --- the shared poller under the triggers -------------------------------------------------------


def _pollers_of(conn_settings_url: str) -> list[poller_module.SharedPoller]:
    return [p for p in poller_module._POLLERS.values() if p.client.settings.base_url == conn_settings_url]


def _poller_of(conn_settings_url: str) -> poller_module.SharedPoller:
    [poller] = _pollers_of(conn_settings_url)
    return poller


def test_many_waiting_triggers_read_the_queue_once_per_interval(
    standin: StandInServer, comfy_conn: str
) -> None:
    submit(standin, gated_workflow("blocker", prefix="tr/blocker"))
    standin.gates.wait_blocked("blocker")  # the 40 stay pending for the whole test
    pending = [submit(standin, image_workflow(f"tr/wait{i}", color=i)) for i in range(40)]
    before = len(standin.requests)

    async def scenario() -> int:
        tasks = [
            asyncio.ensure_future(events_of(make_trigger(comfy_conn, p, poll_interval=0.25))) for p in pending
        ]
        try:
            await until(lambda: bool(_pollers_of(standin.url)), "the shared poller")
            poller = _poller_of(standin.url)
            await until(lambda: len(poller.watches) == 40 and poller.rounds >= 4, "four rounds of 40 watches")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await until(lambda: not poller.running, "the poller's end")  # the last one out stops it
        return poller.rounds

    rounds = asyncio.run(scenario())
    seen = standin.requests[before:]
    queue_reads = sum(1 for _m, p in seen if p == "/queue")
    # One /queue read per round, shared by the 40 triggers (not one per trigger); a round still in
    # flight when the last trigger was cancelled may skip its read.
    assert rounds >= 4
    assert rounds - 1 <= queue_reads <= rounds
    assert not [p for _m, p in seen if p.startswith("/history")]  # all still queued: no history reads
    direct_hook(standin).clear_queue()
    standin.gates.release("blocker")


def test_a_cancelled_trigger_unregisters_its_prompt(standin: StandInServer, comfy_conn: str) -> None:
    blocker = submit(standin, delay_workflow(10, steps=100, prefix="tr/blocker"))
    wait_state(standin, blocker, "running")
    mine, other = (submit(standin, image_workflow(f"tr/c{i}", color=i)) for i in range(2))

    async def scenario() -> tuple[set[str], set[str], bool, bool]:
        killed = asyncio.ensure_future(events_of(make_trigger(comfy_conn, mine)))
        kept = asyncio.ensure_future(events_of(make_trigger(comfy_conn, other)))
        for _ in range(3000):  # until both registered (bounded: 30 s)
            pollers = [
                p for p in poller_module._POLLERS.values() if p.client.settings.base_url == standin.url
            ]
            if pollers and len(pollers[0].watches) == 2:
                break
            await asyncio.sleep(0.01)
        poller = _poller_of(standin.url)
        registered = {w.prompt_id for w in poller.watches}
        killed.cancel()  # what the triggerer does when the task is killed or the trigger removed
        with contextlib.suppress(asyncio.CancelledError):
            await killed
        after_cancel = {w.prompt_id for w in poller.watches}
        kept.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await kept
        await asyncio.sleep(0.05)
        return registered, after_cancel, bool(poller.watches), poller.running

    registered, after_cancel, anyone_left, running = asyncio.run(scenario())
    assert registered == {mine, other} and after_cancel == {other}
    assert not anyone_left and not running  # the last one out stops the poller
    direct_hook(standin).clear_queue()
    direct_hook(standin).cancel_prompt(blocker)


def test_a_closed_trigger_generator_unregisters(standin: StandInServer, comfy_conn: str) -> None:
    async def scenario() -> int:
        run = make_trigger(comfy_conn, UNKNOWN, lost_grace=30).run()
        task = asyncio.ensure_future(run.__anext__())
        await until(lambda: any(p.watches for p in _pollers_of(standin.url)), "the watch registered")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await run.aclose()
        return len(_poller_of(standin.url).watches)

    assert asyncio.run(scenario()) == 0


def test_a_deferred_wait_logs_its_progress(
    standin: StandInServer, comfy_conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the blocking waiter logs, the trigger logs too: position changes, running, the end."""
    submit(standin, gated_workflow("log-blocker", prefix="tr/log-blocker"))
    standin.gates.wait_blocked("log-blocker")  # ours stays pending until the trigger reported it
    prompt_id = submit(standin, image_workflow("tr/logged"))
    trigger = make_trigger(comfy_conn, prompt_id)
    lines: list[str] = []

    def log_line(msg: str, *args: Any) -> None:
        lines.append(msg % args)
        if "pending, position" in lines[-1]:
            standin.gates.release("log-blocker")

    monkeypatch.setattr(trigger.log, "info", log_line)
    try:
        assert only_event(trigger)["status"] == "success"
    finally:
        standin.gates.release("log-blocker")
    assert any("pending, position 1 of 1 in the queue" in line for line in lines), lines
    assert lines[0].startswith(f"Waiting for prompt {prompt_id}") and lines[-1].endswith("success")


def test_a_trigger_serialized_by_the_previous_version_still_runs(
    standin: StandInServer, comfy_conn: str
) -> None:
    prompt_id = submit(standin, image_workflow("tr/old-kwargs"))
    old_kwargs = {  # what 0.1.0's serialize() wrote: no log_interval
        "prompt_id": prompt_id,
        "comfyui_conn_id": comfy_conn,
        "end_time": time.time() + 30,
        "poll_interval": 0.1,
        "lost_grace": 30.0,
        "unreachable_grace": 300.0,
        "cancel_on_kill": True,
        "server": None,
    }
    assert only_event(ComfyUIPromptTrigger(**old_kwargs))["status"] == "success"

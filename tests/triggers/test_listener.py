"""The queue listener: deferred waits learn of an end from ComfyUI's ``status`` broadcast.

Moments are made deterministic: the prompt waited on is held behind a blocker until the test has
seen the listener connect, and ``poll_interval`` is 600 s, so an interval round (the poller's grid
counts from its start) cannot happen within the tests' bounds. Whether the end was detected by the
listener is read from the poller's counters (rounds, woken rounds), never from elapsed times.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
import websocket
from contract_data import load_transcript
from operators.support import delay_workflow, direct_hook, image_workflow, submit, wait_state

from airflow_comfy.protocol.events import MAX_SIGNAL_FRAME, QueueSignal, queue_signal
from airflow_comfy.testing import StandInServer
from airflow_comfy.triggers import listener as listener_module
from airflow_comfy.triggers import poller as poller_module
from airflow_comfy.triggers.comfyui import ComfyUIPromptTrigger

LONG = 600.0  # poll_interval: no interval round can fall within a test


def status_frame(remaining: Any, **extra: Any) -> str:
    return json.dumps(
        {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": remaining}}, **extra}}
    )


# --- reading frames ------------------------------------------------------------------------------


def test_queue_signal_reads_status_and_end_messages() -> None:
    assert queue_signal(status_frame(3, sid="me")) == QueueSignal(queue_remaining=3, greeting=True)
    assert queue_signal(status_frame(2).encode()) == QueueSignal(queue_remaining=2)
    assert queue_signal(status_frame("2")) == QueueSignal(queue_remaining=None)
    assert queue_signal(status_frame(True)) == QueueSignal(queue_remaining=None)
    assert queue_signal('{"type": "status", "data": "x"}') == QueueSignal(queue_remaining=None)
    for end in ("execution_success", "execution_error", "execution_interrupted"):
        assert queue_signal(json.dumps({"type": end, "data": {"prompt_id": "p"}})) == QueueSignal(ended=True)


@pytest.mark.parametrize(
    "frame",
    [
        b'{"type": "progress_state", "data": {"status": {"exec_info": {"queue_remaining": 0}}}}',
        b'{"type": "executing", "data": {"node": null, "prompt_id": "p"}}',
        b"not json at all",
        b"\xff\xfe\x00garbage",
        b"\x00\x00\x00\x01\x00\x00\x00\x02PNG...",
        b"[1, 2, 3]",
        b"",
        (status_frame(1) + " " * MAX_SIGNAL_FRAME).encode(),
    ],
)
def test_queue_signal_ignores_everything_else(frame: bytes) -> None:
    assert queue_signal(frame) is None


# --- against the stand-in -------------------------------------------------------------------------


def test_the_stand_in_broadcasts_status_like_comfyui(standin: StandInServer) -> None:
    """A bystander socket gets what ComfyUI 0.3.64 sent it while another client's prompt ran
    (``ws_two_clients``): the greeting with its ``sid``, then ``status`` on enqueue, dequeue and after
    the end, with the same counts — and nothing else."""
    recorded = load_transcript("ws_two_clients")["client_b"]["messages"]
    ws = websocket.create_connection(f"ws://127.0.0.1:{standin.port}/ws?clientId=bystander", timeout=10)
    try:
        direct_hook(standin).submit_prompt(image_workflow("ls/b"), client_id="A")
        standin.wait_idle(30)
        messages = [json.loads(ws.recv()) for _ in recorded]
        ws.settimeout(0.3)
        with pytest.raises(websocket.WebSocketTimeoutException):
            ws.recv()
    finally:
        ws.close()

    def shape(message: dict[str, Any]) -> tuple[str, Any, bool]:
        return message["type"], message["data"]["status"], "sid" in message["data"]

    assert [shape(m) for m in messages] == [shape(m) for m in recorded]
    assert [queue_signal(json.dumps(m)) for m in messages] == [
        QueueSignal(0, greeting=True),
        QueueSignal(1),
        QueueSignal(1),
        QueueSignal(0),
    ]


def make_trigger(conn_id: str, prompt_id: str, **kwargs: Any) -> ComfyUIPromptTrigger:
    options: dict[str, Any] = {"end_time": time.time() + 120, "poll_interval": LONG, "lost_grace": 60}
    options.update(kwargs)
    return ComfyUIPromptTrigger(prompt_id=prompt_id, comfyui_conn_id=conn_id, **options)


async def first_event(trigger: ComfyUIPromptTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


async def until(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def poller_of(url: str) -> poller_module.SharedPoller | None:
    found = [p for p in poller_module._POLLERS.values() if p.client.settings.base_url == url]
    return found[0] if found else None


def listener_of(url: str) -> listener_module.QueueListener | None:
    found = [lst for lst in listener_module._LISTENERS.values() if lst.settings.base_url == url]
    return found[0] if found else None


def held_prompt(standin: StandInServer) -> tuple[str, str]:
    """A blocker that runs, and a tiny prompt queued behind it (it ends once the blocker is stopped)."""
    blocker = submit(standin, delay_workflow(60, steps=600, prefix="ls/blocker"))
    wait_state(standin, blocker, "running")
    return blocker, submit(standin, image_workflow("ls/held"))


async def start_listening(standin: StandInServer, task: asyncio.Future[Any]) -> tuple[Any, Any]:
    """The poller and listener of ``task``'s trigger, once its socket is open and the greeting read."""
    await until(
        lambda: poller_of(standin.url) is not None and listener_of(standin.url) is not None, "a poller"
    )
    poller, listener = poller_of(standin.url), listener_of(standin.url)
    await until(lambda: listener.connected and listener.signals >= 1 and poller.woken_rounds >= 1, "a socket")
    assert not task.done()
    return poller, listener


def test_an_end_is_detected_by_the_broadcast_not_the_interval(
    standin: StandInServer, comfy_conn: str
) -> None:
    blocker, prompt_id = held_prompt(standin)

    async def scenario() -> tuple[dict[str, Any], int, int, Any]:
        task = asyncio.ensure_future(first_event(make_trigger(comfy_conn, prompt_id)))
        poller, listener = await start_listening(standin, task)
        interval_rounds = poller.rounds - poller.woken_rounds
        await asyncio.to_thread(direct_hook(standin).interrupt, blocker)
        event = await asyncio.wait_for(task, 90)
        return event, interval_rounds, poller.rounds - poller.woken_rounds, listener

    event, before, after, listener = asyncio.run(scenario())
    assert event["status"] == "success" and event["prompt_id"] == prompt_id
    assert after == before  # no interval round ran: a woken round reported the end
    assert listener.connections == 1 and not listener.connected  # closed with the last watch
    assert [p for _m, p in standin.requests].count("/ws") == 1


def test_one_listener_per_server_for_many_triggers(standin: StandInServer, comfy_conn: str) -> None:
    blocker = submit(standin, delay_workflow(60, steps=600, prefix="ls/blocker"))
    wait_state(standin, blocker, "running")
    prompt_ids = [submit(standin, image_workflow(f"ls/many{i}", color=i)) for i in range(20)]

    async def scenario() -> tuple[list[dict[str, Any]], Any, int]:
        tasks = [asyncio.ensure_future(first_event(make_trigger(comfy_conn, p))) for p in prompt_ids]
        poller, listener = await start_listening(standin, tasks[0])
        await until(lambda: len(poller.watches) == len(prompt_ids), "every watch")
        subscribers = len(listener.subscribers)
        await asyncio.to_thread(direct_hook(standin).interrupt, blocker)
        return await asyncio.wait_for(asyncio.gather(*tasks), 90), listener, subscribers

    events, listener, subscribers = asyncio.run(scenario())
    assert {e["status"] for e in events} == {"success"}
    assert subscribers == 1 and listener.connections == 1 and not listener.subscribers


def test_queue_growth_wakes_no_round(standin: StandInServer, comfy_conn: str) -> None:
    """An enqueue (+1) cannot end a prompt: ten submissions, then one deletion, make one signal."""
    _blocker, prompt_id = held_prompt(standin)

    async def scenario() -> tuple[int, int]:
        task = asyncio.ensure_future(first_event(make_trigger(comfy_conn, prompt_id)))
        _poller, listener = await start_listening(standin, task)
        signals = listener.signals
        hook = direct_hook(standin)
        extra = [await asyncio.to_thread(submit, standin, image_workflow(f"ls/x{i}")) for i in range(10)]
        await asyncio.to_thread(hook.cancel_prompt, extra[0])  # -1: the frames before it were read too
        await until(lambda: listener.signals > signals, "the deletion's signal")
        await asyncio.sleep(0.2)  # nothing else is expected; give a stray signal the chance to show
        task.cancel()
        return signals, listener.signals

    before, after = asyncio.run(scenario())
    assert after == before + 1
    direct_hook(standin).clear_queue()


def test_a_burst_of_signals_makes_at_most_one_more_round(standin: StandInServer, comfy_conn: str) -> None:
    _blocker, prompt_id = held_prompt(standin)

    async def scenario() -> tuple[int, int, int]:
        task = asyncio.ensure_future(first_event(make_trigger(comfy_conn, prompt_id)))
        poller, listener = await start_listening(standin, task)
        await until(lambda: poller.rounds >= 2, "the first rounds")
        gate, in_flight, most = asyncio.Event(), [0], [0]
        real_run = poller.client.run

        async def gated_run(flow: Any) -> Any:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
            try:
                await gate.wait()
                return await real_run(flow)
            finally:
                in_flight[0] -= 1

        poller.client.run = gated_run
        rounds, signals = poller.rounds, listener.signals
        end = json.dumps({"type": "execution_success", "data": {"prompt_id": "someone-else"}})
        standin.faults.send_raw_websocket_frame(end)
        await until(lambda: in_flight[0] == 1, "the round the first signal started")
        for _ in range(49):
            standin.faults.send_raw_websocket_frame(end)
        await until(lambda: listener.signals >= signals + 50, "50 signals")
        gate.set()
        await until(lambda: poller.rounds >= rounds + 2 and in_flight[0] == 0, "the rounds")
        await asyncio.sleep(0.3)  # a third round would show here
        task.cancel()
        return poller.rounds - rounds, most[0], listener.signals - signals

    rounds, most, signals = asyncio.run(scenario())
    assert signals == 50
    assert rounds == 2  # the round the first signal started, and one for all the others
    assert most == 1  # never two rounds in flight
    direct_hook(standin).clear_queue()


def test_refused_websockets_fall_back_to_polling_and_warn_once(
    standin: StandInServer, comfy_conn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(listener_module, "BACKOFF_FIRST", 0.01)
    monkeypatch.setattr(listener_module, "BACKOFF_MAX", 0.05)
    monkeypatch.setattr(listener_module, "_WARNED", set())
    standin.faults.refuse_websockets(403)
    blocker, prompt_id = held_prompt(standin)
    caplog.set_level(logging.DEBUG, logger=listener_module.__name__)

    def attempts() -> int:
        return sum(
            "unavailable" in r.getMessage() for r in caplog.records if r.name == listener_module.__name__
        )

    async def scenario() -> tuple[dict[str, Any], Any]:
        task = asyncio.ensure_future(first_event(make_trigger(comfy_conn, prompt_id, poll_interval=0.2)))
        await until(lambda: attempts() >= 3, "three refused upgrades")
        await asyncio.to_thread(direct_hook(standin).interrupt, blocker)
        return await asyncio.wait_for(task, 90), listener_of(standin.url)

    event, listener = asyncio.run(scenario())
    assert event["status"] == "success"  # interval polling carried the wait
    assert listener.connections == 0
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and r.name == listener_module.__name__
    ]
    assert len(warnings) == 1 and "fall back to polling" in warnings[0].getMessage()
    assert "403" in warnings[0].getMessage()


def test_dropped_sockets_and_hostile_frames_never_break_a_wait(
    standin: StandInServer, comfy_conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listener_module, "MAX_FRAME", 64 * 1024)
    monkeypatch.setattr(listener_module, "BACKOFF_FIRST", 0.01)
    blocker, prompt_id = held_prompt(standin)

    async def scenario() -> tuple[dict[str, Any], int, int, Any]:
        task = asyncio.ensure_future(first_event(make_trigger(comfy_conn, prompt_id)))
        poller, listener = await start_listening(standin, task)
        for frame in ("not json", "[1]", '{"type": 5}', b"\xff\xfe\x00", b"\x00\x00\x00\x09?", "{" * 10_000):
            standin.faults.send_raw_websocket_frame(frame)
        await asyncio.to_thread(standin.faults.drop_websockets)
        await until(lambda: listener.connections == 2 and listener.connected, "a reconnect after a drop")
        standin.faults.send_raw_websocket_frame("x" * (64 * 1024 + 1))  # over MAX_FRAME: ends the socket
        await until(
            lambda: listener.connections == 3 and listener.connected, "a reconnect after a huge frame"
        )
        await until(lambda: listener.signals >= 3, "the greeting of the third socket")
        interval_rounds = poller.rounds - poller.woken_rounds
        await asyncio.to_thread(direct_hook(standin).interrupt, blocker)
        event = await asyncio.wait_for(task, 90)
        return event, interval_rounds, poller.rounds - poller.woken_rounds, listener

    event, before, after, listener = asyncio.run(scenario())
    assert event["status"] == "success"
    assert after == before  # still detected by the broadcast after all that
    assert listener.connections == 3

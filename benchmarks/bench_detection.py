"""Completion detection latency: how long after a prompt ends does the caller know its outputs?

Latency = (time the wait returned with the outputs) minus (the ``execution_success`` timestamp the server
wrote into the history entry; same machine, same clock, millisecond resolution).

- polling mode (``hook.wait_for_prompt(mode="polling")``) and the deferred trigger
  (``ComfyUIPromptTrigger``, i.e. the shared poller): target ≤ the check interval;
- WebSocket mode vs the bare client (alternating runs): target median difference ≤ 20 ms.

On the stand-in the prompts run a random 0.1 to 0.1+interval s (``StandInDelay``), so the end falls at
a random phase of the polling; on a real server the tiny workflow ends within milliseconds of the
submission, which is close to the worst case for polling (the second check finds it).

    .venv/bin/python benchmarks/bench_detection.py [--interval 0.5] [--runs 10]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import time
from typing import Any

from common import (
    Samples,
    alternate,
    delay_workflow,
    header,
    quiet_airflow_home,
    quiet_logs,
    real_url,
    server_under_test,
    tiny_workflow,
    verdict,
)

quiet_airflow_home()

from bare_client import BareClient  # noqa: E402

from airflow_comfy.hooks.comfyui import ComfyUIHook  # noqa: E402
from airflow_comfy.hooks.connection import ComfyUISettings  # noqa: E402
from airflow_comfy.protocol.ids import new_client_id  # noqa: E402
from airflow_comfy.triggers.comfyui import ComfyUIPromptTrigger  # noqa: E402

quiet_logs()
WS_TARGET = 0.020
CONN_ID = "comfy_bench_detection"
colors = itertools.count(5000)


def success_time(hook: ComfyUIHook, prompt_id: str) -> float:
    """Epoch seconds of the prompt's ``execution_success`` message in its history entry."""
    entry = hook.get_history(prompt_id)[prompt_id]
    for name, data in entry["status"]["messages"]:
        if name == "execution_success":
            return float(data["timestamp"]) / 1000.0
    raise RuntimeError(f"prompt {prompt_id} did not succeed: {entry['status']}")


def workflow(interval: float) -> dict[str, Any]:
    if real_url():
        return tiny_workflow("bench/detect", next(colors))
    return delay_workflow("bench/detect", random.uniform(0.1, 0.1 + interval), steps=2, color=next(colors))


def polling_latency(hook: ComfyUIHook, interval: float) -> float:
    prompt_id = hook.submit_prompt(workflow(interval))["prompt_id"]
    hook.wait_for_prompt(prompt_id, mode="polling", check_interval=interval, timeout=60)
    return time.time() - success_time(hook, prompt_id)


def trigger_latency(hook: ComfyUIHook, interval: float) -> float:
    prompt_id = hook.submit_prompt(workflow(interval))["prompt_id"]
    trigger = ComfyUIPromptTrigger(prompt_id, CONN_ID, end_time=time.time() + 60, poll_interval=interval)

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise RuntimeError("the trigger ended without an event")

    event = asyncio.run(asyncio.wait_for(first_event(), 70))
    done = time.time()
    assert event["status"] == "success", event
    return done - success_time(hook, prompt_id)


def websocket_latency(hook: ComfyUIHook) -> float:
    client_id = new_client_id()
    socket = hook.websocket(client_id).connect()
    prompt_id = hook.submit_prompt(tiny_workflow("bench/ws", next(colors)), client_id=client_id)["prompt_id"]
    hook.wait_for_prompt(prompt_id, client_id=client_id, websocket=socket, timeout=60)
    return time.time() - success_time(hook, prompt_id)


def bare_latency(hook: ComfyUIHook, bare: BareClient) -> float:
    files, _ended = bare.run(tiny_workflow("bench/ws", next(colors)))
    done = time.time()
    assert files
    [(prompt_id, _entry)] = hook.get_history(max_items=1).items()  # the run that just ended
    return done - success_time(hook, prompt_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.5, help="check interval in s (default 0.5)")
    parser.add_argument("--runs", type=int, default=10, help="polling runs per contender (default 10)")
    args = parser.parse_args()
    with server_under_test() as (url, _standin):
        header(f"completion detection latency (check interval {args.interval} s)", url)
        os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps({"conn_type": "comfyui", "host": url})
        hook = ComfyUIHook(settings=ComfyUISettings(conn_id="bench", base_url=url))
        bare = BareClient(url)
        try:
            polling = Samples(
                "polling (hook)", [polling_latency(hook, args.interval) for _ in range(args.runs)]
            )
            deferred = Samples(
                "deferred (trigger)", [trigger_latency(hook, args.interval) for _ in range(args.runs)]
            )
            ws, floor = alternate(
                [
                    ("websocket (hook)", lambda _i: websocket_latency(hook)),
                    ("bare client", lambda _i: bare_latency(hook, bare)),
                ],
                runs=3 * args.runs,
            )
        finally:
            hook.close()
            bare.close()
        for samples in (polling, deferred):
            print(samples.line())
            worst = max(samples.values)
            ok = verdict(worst <= args.interval)
            print(f"   worst {worst * 1e3:.0f} ms vs interval {args.interval * 1e3:.0f} ms: {ok}")
        print(ws.line())
        print(floor.line())
        extra = ws.median - floor.median
        ok = verdict(extra <= WS_TARGET)
        print(f"websocket over bare (median): {extra * 1e3:+.1f} ms  target ≤ {WS_TARGET * 1e3:.0f} ms  {ok}")


if __name__ == "__main__":
    main()

"""10, 100, 1,000 prompts waited on at once by ``ComfyUIPromptTrigger``s in one event loop.

Per size N, on the stand-in (in a child process, so its CPU and memory are not counted here):
1. a blocker prompt (``StandInDelay``, 10 min, interruptible) runs; N tiny prompts queue behind it;
2. *baseline*: the previous design (each waiter polls /history then /queue itself) for ``--window`` s;
3. *triggers*: N triggers in one loop for ``--window`` s while every prompt waits in the queue, then
   the blocker is interrupted and all N must complete.
Figures: HTTP requests per prompt per check interval (from the stand-in's ``requests``), CPU time
over wall time of this process while waiting, RSS growth, all complete; the rounds the queue
listener woke and its signals (``--no-listener``: interval rounds only). Targets: ≤ 1 request per
prompt per interval, CPU mostly idle, growth ≤ 100 MB for 1,000, all complete.

With ``COMFYUI_URL`` (real server: no StandInDelay, no baseline, requests counted client-side), the
N tiny prompts are submitted and waited on with no blocker; keep N modest on a shared server.

    .venv/bin/python benchmarks/bench_triggers.py [--sizes 10,100,1000] [--interval 1] [--window 10]
        [--no-baseline] [--no-listener]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from collections import Counter
from typing import Any

from common import (
    StandInProcess,
    delay_workflow,
    header,
    quiet_airflow_home,
    quiet_logs,
    real_url,
    rss_bytes,
    server_under_test,
    tiny_workflow,
    verdict,
)

quiet_airflow_home()

from airflow_comfy.hooks import async_client  # noqa: E402
from airflow_comfy.hooks.comfyui import ComfyUIHook  # noqa: E402
from airflow_comfy.hooks.connection import ComfyUISettings  # noqa: E402
from airflow_comfy.protocol.flows import Answer, Call  # noqa: E402
from airflow_comfy.protocol.states import PromptState  # noqa: E402
from airflow_comfy.triggers import listener, poller  # noqa: E402
from airflow_comfy.triggers.comfyui import ComfyUIPromptTrigger  # noqa: E402

quiet_logs()
CONN_ID = "comfy_bench_triggers"
MB = 2**20
_sent: Counter[str] = Counter()  # client-side request count (real server)
_real_send = async_client.AsyncComfyUIClient._send


async def _counting_send(self: async_client.AsyncComfyUIClient, call: Call, shown: str) -> Answer:
    _sent["/queue" if call.path == "/queue" else call.path.split("/")[1]] += 1
    return await _real_send(self, call, shown)


async_client.AsyncComfyUIClient._send = _counting_send  # type: ignore[method-assign]


class Meter:
    """CPU time, wall time, peak RSS and requests over one phase."""

    def __init__(self, standin: StandInProcess | None) -> None:
        self.standin = standin
        gc.collect()
        self.rss0 = rss_bytes()
        self.peak = self.rss0
        self.cpu0, self.wall0 = time.process_time(), time.monotonic()
        self.req0 = standin.request_count() if standin else sum(_sent.values())

    def sample(self) -> None:
        self.peak = max(self.peak, rss_bytes())

    def done(self) -> dict[str, float]:
        self.sample()
        if self.standin:
            seen = self.standin.requests(self.req0)
            polls = sum(1 for m, p in seen if m == "GET" and (p == "/queue" or p.startswith("/history")))
        else:
            polls = sum(_sent.values()) - self.req0
        wall = time.monotonic() - self.wall0
        cpu = time.process_time() - self.cpu0
        return {"wall": wall, "cpu": cpu, "growth": (self.peak - self.rss0) / MB, "requests": polls}


async def sampling(meter: Meter, stop: asyncio.Event) -> None:
    while not stop.is_set():
        meter.sample()
        await asyncio.sleep(0.1)


async def baseline(url: str, prompt_ids: list[str], interval: float, window: float, meter: Meter) -> None:
    """The previous design: every waiter reads its own status, every interval."""
    client = async_client.AsyncComfyUIClient(ComfyUISettings(conn_id="bench", base_url=url))

    async def poll(prompt_id: str) -> None:
        while True:
            await client.get_prompt_status(prompt_id)
            await asyncio.sleep(interval)

    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(poll(p)) for p in prompt_ids]
    sampler = asyncio.ensure_future(sampling(meter, stop))
    await asyncio.sleep(window)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    stop.set()
    await sampler


async def triggers(
    prompt_ids: list[str], interval: float, window: float, release: Any, standin: StandInProcess | None
) -> tuple[dict[str, float], dict[str, float], Counter[str]]:
    """Wait with N triggers: the waiting window first, then ``release()`` and wait for all events."""
    end = time.time() + 3600
    starting = Meter(standin)

    async def one(trigger: ComfyUIPromptTrigger) -> str:
        async for event in trigger.run():
            return str(event.payload["status"])
        return "no event"

    stop = asyncio.Event()
    sampler = asyncio.ensure_future(sampling(starting, stop))
    tasks = [
        asyncio.ensure_future(one(ComfyUIPromptTrigger(p, CONN_ID, end_time=end, poll_interval=interval)))
        for p in prompt_ids
    ]
    await started(tasks)
    start_figures = starting.done()
    waiting = Meter(standin)
    waiting.rss0 = starting.rss0  # growth counts from before the triggers were made
    stop.set()
    await sampler
    stop = asyncio.Event()
    sampler = asyncio.ensure_future(sampling(waiting, stop))
    await asyncio.sleep(window)
    waiting_figures = waiting.done()
    for name, value in start_figures.items():
        waiting_figures[f"start_{name}"] = value
    draining = Meter(standin)
    await asyncio.to_thread(release)
    statuses = await asyncio.wait_for(asyncio.gather(*tasks), 120 + 0.2 * len(prompt_ids))
    stop.set()
    await sampler
    return waiting_figures, draining.done(), Counter(statuses)


async def started(tasks: list[asyncio.Future[str]], timeout: float = 120.0) -> None:
    """Until every trigger has registered its prompt and two rounds ran, or all ended (bounded)."""
    deadline = time.monotonic() + timeout
    n = len(tasks)
    while time.monotonic() < deadline:
        pollers = list(poller._POLLERS.values())
        if pollers and len(pollers[0].watches) == n and pollers[0].rounds >= 2:
            return
        if all(task.done() for task in tasks):
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"{n} triggers did not start within {timeout} s")


def queue_cost(hook: ComfyUIHook) -> str:
    started = time.perf_counter()
    with hook.client().transport.request("GET", "/queue") as response:
        size = len(response.content)
    return f"{size / 1024:.0f} KiB in {(time.perf_counter() - started) * 1e3:.0f} ms"


def run_size(hook: ComfyUIHook, url: str, standin: StandInProcess | None, n: int, args: Any) -> None:
    blocker = None
    if standin:
        blocker = hook.submit_prompt(delay_workflow("bench/blocker", 600, steps=6000))["prompt_id"]
        deadline = time.monotonic() + 30
        while hook.get_prompt_status(blocker).state is not PromptState.RUNNING:
            if time.monotonic() > deadline:
                raise TimeoutError("the blocker never started")
            time.sleep(0.05)
    ids = [hook.submit_prompt(tiny_workflow(f"bench/t{n}", 10_000 * n + i))["prompt_id"] for i in range(n)]
    print(f"-- N = {n}" + (f"   (stand-in /queue with {n} pending: {queue_cost(hook)})" if standin else ""))
    windows = args.window / args.interval
    if standin and not args.no_baseline:
        meter = Meter(standin)
        asyncio.run(baseline(url, ids, args.interval, args.window, meter))
        b = meter.done()
        rate = b["requests"] / (n * windows)
        print(
            f"   baseline (per-waiter polling): {rate:.2f} requests/prompt/interval, "
            f"CPU {100 * b['cpu'] / b['wall']:.0f}% of wall, RSS +{b['growth']:.1f} MB"
        )

    def release() -> None:
        if blocker:
            hook.interrupt(blocker)

    w, d, statuses = asyncio.run(
        triggers(ids, args.interval, args.window if standin else 0.0, release, standin)
    )
    if standin:
        per = w["requests"] / (n * windows)
        share = 100 * w["cpu"] / w["wall"]
        print(
            f"   triggers start (connection read, register, first round): {w['start_wall']:.2f} s wall, "
            f"{w['start_cpu']:.2f} s CPU"
        )
        print(
            f"   triggers waiting {w['wall']:.1f} s: {w['requests']} requests = {per:.3f} "
            f"requests/prompt/interval (target ≤ 1: {verdict(per <= 1)}), CPU {w['cpu']:.2f} s = "
            f"{share:.1f}% of wall"
        )
    if not standin:  # no blocker: the prompts end while the triggers start; count both phases
        d = {k: d[k] + w[f"start_{k}"] for k in ("wall", "cpu", "requests")} | {"growth": w["start_growth"]}
    print(
        f"   completion: {statuses.get('success', 0)}/{n} success {dict(statuses)} in {d['wall']:.1f} s, "
        f"{d['requests']} requests = {d['requests'] / n:.2f} per prompt, "
        f"CPU {100 * d['cpu'] / d['wall']:.0f}% of wall"
    )
    growth = max(w["growth"], d["growth"])
    print(
        f"   RSS growth {growth:.1f} MB = {growth * 1024 / n:.1f} KiB/prompt "
        f"(1,000 ≤ 100 MB: {verdict(growth * 1000 / max(n, 1000) <= 100)}); all complete: "
        f"{verdict(statuses.get('success', 0) == n)}"
    )
    rounds = sum(p.rounds for p in poller._POLLERS.values())
    woken = sum(p.woken_rounds for p in poller._POLLERS.values())
    sockets = sum(lst.connections for lst in listener._LISTENERS.values())
    signals = sum(lst.signals for lst in listener._LISTENERS.values())
    off = "" if poller.SharedPoller.listen else "; listener off"
    heard = f"{woken} woken by the queue listener: {signals} signals, {sockets} sockets{off}"
    print(f"   rounds {rounds} ({heard})")
    if standin:
        standin.wait_idle(120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="", help="comma-separated N (default 10,100,1000; real: 10,100)")
    parser.add_argument("--interval", type=float, default=1.0, help="trigger poll_interval in s (default 1)")
    parser.add_argument("--window", type=float, default=10.0, help="seconds of waiting measured (default 10)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the per-waiter polling baseline")
    parser.add_argument("--no-listener", action="store_true", help="interval rounds only (no WebSocket)")
    args = parser.parse_args()
    sizes = [int(s) for s in (args.sizes or ("10,100" if real_url() else "10,100,1000")).split(",")]
    if len(sizes) > 1:  # one fresh process (and server) per size: no memory reused from a smaller run
        for n in sizes:
            argv = [f"--sizes={n}", f"--interval={args.interval}", f"--window={args.window}"]
            argv += ["--no-baseline"] if args.no_baseline else []
            argv += ["--no-listener"] if args.no_listener else []
            subprocess.run([sys.executable, __file__, *argv], check=True, timeout=3600)
        return
    poller.SharedPoller.listen = not args.no_listener
    with server_under_test() as (url, standin):
        header(
            f"{'/'.join(map(str, sizes))} deferred prompts in one event loop (interval {args.interval} s)",
            url,
        )
        os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps({"conn_type": "comfyui", "host": url})
        hook = ComfyUIHook(settings=ComfyUISettings(conn_id="bench", base_url=url))
        try:
            for n in sizes:
                run_size(hook, url, standin, n, args)
        finally:
            hook.close()


if __name__ == "__main__":
    main()

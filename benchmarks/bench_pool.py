"""A pool of servers behind one connection vs one server: 30 slow prompts, wall time.

Three stand-in servers (each in its own child process, one worker each, like ComfyUI) with a slow
node; 30 prompts submitted through ``ComfyUIHook`` on a connection naming all three
(``extra.hosts``), each waited on in its own thread, against the same 30 prompts on one server.
Expected: pool wall time close to 1/3 of the single server's.

    .venv/bin/python benchmarks/bench_pool.py [--prompts 30] [--seconds 0.2]
"""

from __future__ import annotations

import argparse
import threading
from collections import Counter
from contextlib import ExitStack

from common import (
    StandInProcess,
    delay_workflow,
    header,
    now,
    quiet_airflow_home,
    quiet_logs,
    scratch_dir,
    verdict,
)

quiet_airflow_home()

from airflow_comfy.hooks.comfyui import ComfyUIHook  # noqa: E402
from airflow_comfy.hooks.connection import ComfyUISettings  # noqa: E402


def run_batch(servers: list[str], prompts: int, seconds: float, tag: str) -> tuple[float, Counter[str]]:
    """Submit ``prompts`` slow prompts through one connection naming ``servers``; wait for all."""
    settings = ComfyUISettings(conn_id="bench", base_url=servers[0], servers=tuple(servers))
    placed: Counter[str] = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        hook = ComfyUIHook(settings=settings)
        try:
            answer = hook.submit_prompt(delay_workflow(f"bench/{tag}", seconds, color=index))
            with lock:
                placed[answer["server"]] += 1
            hook.wait_for_prompt(answer["prompt_id"], mode="polling", check_interval=0.05, timeout=600)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            hook.close()

    started = now()
    threads = []
    for index in range(prompts):
        thread = threading.Thread(target=one, args=(index,))
        thread.start()
        threads.append(thread)
        # Submissions arrive a little apart, as mapped tasks on several workers would.
        threading.Event().wait(0.01)
    for thread in threads:
        thread.join(timeout=600)
    if errors:
        raise RuntimeError(f"{len(errors)} prompt(s) failed, first: {errors[0]}")
    return now() - started, placed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=0.2, help="seconds the slow node takes per prompt")
    args = parser.parse_args()
    quiet_logs()
    with ExitStack() as stack:
        stands = []
        for i in range(3):
            base = stack.enter_context(scratch_dir(f"comfy-bench-pool{i}-"))
            stands.append(StandInProcess(base).start())
            stack.callback(stands[-1].stop)
        urls = [s.url for s in stands]
        header("pool of 3 servers vs 1 server", ", ".join(urls))
        single, _ = run_batch(urls[:1], args.prompts, args.seconds, "single")
        pooled, placed = run_batch(urls, args.prompts, args.seconds, "pool")
    ideal = args.prompts * args.seconds
    ratio = pooled / single
    print(f"   {args.prompts} prompts x {args.seconds:g} s of work ({ideal:.1f} s serial)")
    print(f"   one server:  {single:6.2f} s")
    print(f"   3 servers:   {pooled:6.2f} s   spread {sorted(placed.values())}")
    print(f"   ratio pool/single = {ratio:.2f} (ideal 0.33; target <= 0.45)  {verdict(ratio <= 0.45)}")


if __name__ == "__main__":
    main()

"""Batches (``ComfyUIBatchOperator``'s :class:`~airflow_comfy.batch.runner.BatchRun`): cost, throughput,
memory and resume, measured side by side in one run on stand-in servers in child processes.

1. ``cpu``: client CPU per item of a 1,000-item batch (instant nodes, downloads on; process CPU
   time of the run / items; target ≤ 5 ms; also with ``download=False`` and the HTTP requests per
   item the server saw), and the wall and CPU per task of 100 mapped
   ``ComfyUIPromptOperator`` tasks run by ``dag.test()`` (a generated DAG, migrated SQLite DB) on
   the same server: the ratio mapped / batch per item is printed.
2. ``throughput``: 3 servers whose prompts take ``--seconds`` each (``StandInDelay``): items per
   second vs the sum of the servers' capacities (target ≥ 0.9), and the share of server time spent
   idle while items were still waiting to be submitted (from the prompts' start and end times in
   the manifest, which come from each server's history).
3. ``memory``: 10,000 items read from a JSON Lines file on 3 servers: peak RSS growth of this
   process (VmRSS sampled every 50 ms; target ≤ 50 MB) and a complete manifest.
4. ``resume``: a batch stopped when half its items are in the manifest, then run again as try 2 to
   the end; twice: stopped with ``cancel_on_kill=False`` (its prompts stay on the servers), and a
   worker process killed with SIGKILL. Counts the stand-ins' accepted submissions: no prompt id
   twice (target 0), manifest complete. (In-process stand-ins here: their submissions are read.)

    .venv/bin/python benchmarks/bench_batch.py [--only cpu,throughput,memory,resume]
        [--items 1000] [--mapped 100] [--seconds 0.2] [--big 10000] [--resume-items 400]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import textwrap
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from common import (
    StandInProcess,
    delay_workflow,
    machine,
    quiet_airflow_home,
    quiet_logs,
    scratch_dir,
    tiny_workflow,
    verdict,
)

quiet_airflow_home()
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")  # dag.test() logs every task at INFO

import logging  # noqa: E402
import warnings  # noqa: E402

from airflow_comfy.batch import read_manifest  # noqa: E402
from airflow_comfy.batch.options import make_options  # noqa: E402
from airflow_comfy.batch.records import epoch  # noqa: E402
from airflow_comfy.batch.task import batch_for_task  # noqa: E402
from airflow_comfy.hooks.comfyui import ComfyUIHook  # noqa: E402
from airflow_comfy.hooks.connection import ComfyUISettings  # noqa: E402

LOG = logging.getLogger("bench.batch")
PARTS = ("cpu", "throughput", "memory", "resume")


def context(run_id: str, try_number: int = 1) -> dict[str, Any]:
    """The part of a task's context a batch reads (``ti``'s identity and try number)."""
    ti = SimpleNamespace(dag_id="bench", run_id=run_id, task_id="batch", map_index=-1, try_number=try_number)
    return {"ti": ti}


def make_run(urls: list[str], workflow: Any, items: Any, out: Path, run_id: str, **options: Any) -> Any:
    settings = ComfyUISettings(conn_id="bench", base_url=urls[0], servers=tuple(urls))
    try_number = options.pop("try_number", 1)
    stop = options.pop("stop", None)
    opts = make_options(items, out, progress_interval=3600, check_interval=0.5, **options)
    return batch_for_task(
        ComfyUIHook(settings=settings), context(run_id, try_number), LOG, opts, workflow, stop=stop
    )


def started(stack: ExitStack, base: Path) -> StandInProcess:
    """A stand-in in a child process, stopped when ``stack`` closes."""
    standin = StandInProcess(base).start()
    stack.callback(standin.stop)
    return standin


def tiny_items(count: int) -> list[dict[str, Any]]:
    return [{"key": f"i{n:05d}", "1.color": n} for n in range(count)]


def manifest_lines(out: Path) -> int:
    path = out / "manifest.jsonl"
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


# --- 1. cpu ------------------------------------------------------------------------------------------


MAPPED_DAG = """
    import pendulum
    from airflow.sdk import dag
    from airflow_comfy.operators.comfyui import ComfyUIPromptOperator

    @dag(dag_id={dag_id!r}, schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False)
    def mapped():
        ComfyUIPromptOperator.partial(
            task_id="render", workflow={workflow!r}, output_dir={out!r} + "/{{{{ ti.map_index }}}}"
        ).expand(overrides=[{{"1.color": n}} for n in range({count})])

    mapped()
"""


def mapped_tasks(url: str, count: int, scratch: Path) -> tuple[float, float]:
    """(wall, CPU) of a ``dag.test()`` of ``count`` mapped prompt tasks, after a 2-task warm-up run."""
    from airflow_comfy.testing.dags import ensure_db, run_dag

    folder = scratch / "dags"
    folder.mkdir()
    workflow = tiny_workflow("bench/mapped", 0)
    for dag_id, n in (("bench_mapped_warmup", 2), ("bench_mapped", count)):
        text = MAPPED_DAG.format(dag_id=dag_id, workflow=workflow, out=str(scratch / dag_id), count=n)
        (folder / f"{dag_id}.py").write_text(textwrap.dedent(text))
    ensure_db()
    run_dag("bench_mapped_warmup", folder, comfyui_url=url).raise_for_state()
    wall, cpu = time.perf_counter(), time.process_time()
    result = run_dag("bench_mapped", folder, comfyui_url=url)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    result.raise_for_state()
    return wall, cpu


def timed_batch(standin: StandInProcess, count: int, out: Path, **options: Any) -> tuple[float, float, int]:
    """(wall, CPU, HTTP requests) of a batch of ``count`` instant items."""
    run = make_run(
        [standin.url], tiny_workflow("bench/batch", 0), tiny_items(count), out, out.name, **options
    )
    requests = standin.request_count()
    wall, cpu = time.perf_counter(), time.process_time()
    summary = run.run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert summary.succeeded == count, summary
    return wall, cpu, standin.request_count() - requests


def part_cpu(args: argparse.Namespace, scratch: Path) -> list[tuple[str, str, str, str]]:
    with ExitStack() as stack:
        standin = started(stack, scratch / "standin")
        timed_batch(standin, 5, scratch / "warm")  # imports, sockets
        wall, cpu, requests = timed_batch(standin, args.items, scratch / "batch")
        _, cpu_kept, _ = timed_batch(standin, args.items, scratch / "kept", download=False)
        m_wall, m_cpu = mapped_tasks(standin.url, args.mapped, scratch)
    per_item, mapped_per_task = cpu / args.items, m_cpu / args.mapped
    print(f"   batch of {args.items}: {wall:.1f} s wall, {cpu:.1f} s CPU, {requests} HTTP requests")
    print(f"   {args.mapped} mapped tasks (dag.test): {m_wall:.1f} s wall, {m_cpu:.1f} s CPU")
    ratio = mapped_per_task / per_item
    return [
        ("client CPU per item (batch)", f"{per_item * 1e3:.2f} ms", "≤ 5 ms", verdict(per_item <= 0.005)),
        ("  same, download=False", f"{cpu_kept / args.items * 1e3:.2f} ms", "", ""),
        ("  HTTP requests per item", f"{requests / args.items:.2f}", "", ""),
        ("wall per item (batch)", f"{wall / args.items * 1e3:.2f} ms", "", ""),
        ("CPU per mapped task", f"{mapped_per_task * 1e3:.0f} ms", "", ""),
        ("wall per mapped task", f"{m_wall / args.mapped * 1e3:.0f} ms", "", ""),
        ("CPU mapped task / batch item", f"{ratio:.0f}x", "", ""),
        ("wall mapped task / batch item", f"{(m_wall / args.mapped) / (wall / args.items):.0f}x", "", ""),
    ]


# --- 2. throughput -------------------------------------------------------------------------------------


def idle_share(records: list[dict[str, Any]], servers: int) -> tuple[float, float]:
    """(share of server time idle, share of time at least one server idle) while items waited:
    from the first prompt's start to the last item's submission, from the servers' own times."""
    begin = min(epoch(r["started_at"]) for r in records)
    end = max(epoch(r["queued_at"]) for r in records)
    if end <= begin:
        return 0.0, 0.0
    busy: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        busy.setdefault(r["server"], []).append((epoch(r["started_at"]), epoch(r["finished_at"])))
    idle_total, edges = 0.0, []
    for spans in busy.values():
        spans.sort()
        cursor = begin
        for start, finish in spans:
            start, finish = max(start, begin), min(finish, end)
            if start > cursor:
                idle_total += start - cursor
                edges.append((cursor, start))
            cursor = max(cursor, finish)
        if cursor < end:
            idle_total += end - cursor
            edges.append((cursor, end))
    idle_total += (servers - len(busy)) * (end - begin)
    union, last = 0.0, begin
    for start, finish in sorted(edges):  # time when at least one server was idle
        start = max(start, last)
        if finish > start:
            union += finish - start
            last = finish
    return idle_total / (servers * (end - begin)), union / (end - begin)


def part_throughput(args: argparse.Namespace, scratch: Path) -> list[tuple[str, str, str, str]]:
    count = int(args.throughput_seconds * 3 / args.seconds)
    with ExitStack() as stack:
        urls = [started(stack, scratch / f"s{i}").url for i in range(3)]
        workflow = delay_workflow("bench/slow", args.seconds, steps=4)
        make_run(urls, workflow, tiny_items(6), scratch / "warm", "warm").run()
        run = make_run(urls, workflow, tiny_items(count), scratch / "tp", "tp", max_in_flight=args.in_flight)
        wall = time.perf_counter()
        run.run()
        wall = time.perf_counter() - wall
    records = list(read_manifest(str(scratch / "tp")))
    span = max(epoch(r["finished_at"]) for r in records) - min(epoch(r["started_at"]) for r in records)
    per_prompt = sorted(epoch(r["finished_at"]) - epoch(r["started_at"]) for r in records)[len(records) // 2]
    capacity = 3 / args.seconds
    steady, whole = count / span / capacity, count / wall / capacity
    idle, any_idle = idle_share(records, 3)
    spread = sorted(Counter(r["server"] for r in records).values())
    print(f"   {count} items x {args.seconds:g} s on 3 servers, max_in_flight={args.in_flight}: {wall:.1f} s")
    print(f"   median prompt time on a server {per_prompt * 1e3:.0f} ms; spread {spread}")
    return [
        ("throughput / capacity (first start → last end)", f"{steady:.3f}", "≥ 0.9", verdict(steady >= 0.9)),
        ("throughput / capacity (whole run, incl. start)", f"{whole:.3f}", "", ""),
        ("server time idle while items waited", f"{idle:.1%}", "≈ 0", ""),
        ("time some server idle while items waited", f"{any_idle:.1%}", "", ""),
    ]


# --- 3. memory -----------------------------------------------------------------------------------------


def vm_rss() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def part_memory(args: argparse.Namespace, scratch: Path) -> list[tuple[str, str, str, str]]:
    items = scratch / "items.jsonl"
    with items.open("w") as handle:
        for n in range(args.big):
            handle.write(json.dumps({"key": f"item-{n:06d}", "overrides": {"1.color": n}}) + "\n")
    with ExitStack() as stack:
        urls = [started(stack, scratch / f"s{i}").url for i in range(3)]
        workflow = tiny_workflow("bench/big", 0)
        make_run(urls, workflow, tiny_items(20), scratch / "warm", "warm").run()
        run = make_run(urls, workflow, str(items), scratch / "big", "big", max_in_flight=3)
        base, peak, done = vm_rss(), [0], threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], vm_rss())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        wall = time.perf_counter()
        try:
            summary = run.run()
        finally:
            done.set()
            sampler.join(5)
        wall = time.perf_counter() - wall
    growth = (max(peak[0], vm_rss()) - base) / 2**20
    lines = manifest_lines(scratch / "big")
    statuses = Counter(r["status"] for r in read_manifest(str(scratch / "big")))
    complete = lines == args.big and statuses["succeeded"] == args.big == summary.succeeded
    print(f"   {args.big} items from JSON Lines on 3 servers: {wall:.0f} s; statuses {dict(statuses)}")
    return [
        (f"peak RSS growth, {args.big} items", f"{growth:.1f} MB", "≤ 50 MB", verdict(growth <= 50)),
        ("manifest lines", f"{lines}/{args.big}", "complete", verdict(complete)),
    ]


# --- 4. resume -----------------------------------------------------------------------------------------


def _worker(urls: list[str], count: int, out: str) -> None:
    """Child process: try 1 of the batch, until its parent kills it."""
    quiet_logs()
    LOG.setLevel(logging.WARNING)
    make_run(urls, tiny_workflow("bench/resume", 0), tiny_items(count), Path(out), "resume").run()


def _wait_half(out: Path, count: int, alive: Any) -> None:
    deadline = time.monotonic() + 300
    while manifest_lines(out) < count // 2:
        if time.monotonic() > deadline or not alive():
            raise RuntimeError("the first try ended (or hung) before half of the items finished")
        time.sleep(0.005)


def part_resume(args: argparse.Namespace, scratch: Path) -> list[tuple[str, str, str, str]]:
    from airflow_comfy.testing import StandInServer

    rows = []
    count = args.resume_items
    for how in ("stop, cancel_on_kill=False", "SIGKILL of the worker"):
        tag = "sigkill" if how.startswith("SIGKILL") else "stop"
        out = scratch / f"resume-{tag}"
        with ExitStack() as stack:
            servers = [stack.enter_context(StandInServer(base_dir=scratch / f"{tag}{i}")) for i in range(2)]
            urls = [s.url for s in servers]
            workflow = tiny_workflow("bench/resume", 0)
            if tag == "stop":
                stop = threading.Event()
                first = make_run(
                    urls, workflow, tiny_items(count), out, "resume", cancel_on_kill=False, stop=stop
                )
                thread = threading.Thread(target=_swallow, args=(first.run,), daemon=True)
                thread.start()
                _wait_half(out, count, thread.is_alive)
                first.kill("the benchmark stops it at 50 %")
                thread.join(60)
            else:
                proc = multiprocessing.get_context("spawn").Process(
                    target=_worker, args=(urls, count, str(out))
                )
                proc.start()
                _wait_half(out, count, proc.is_alive)
                os.kill(proc.pid, signal.SIGKILL)
                proc.join(30)
            at_kill = manifest_lines(out)
            second = make_run(urls, workflow, tiny_items(count), out, "resume", try_number=2)
            summary = second.run()
            submitted = Counter(p for s in servers for p in s.submissions)
        twice = sum(1 for n in submitted.values() if n > 1)
        keys = Counter(r["key"] for r in read_manifest(str(out)))
        complete = len(keys) == count and set(keys.values()) == {1} and summary.failed == 0
        print(
            f"   {how}: {at_kill}/{count} in the manifest at the kill; try 2 found {summary.earlier} "
            f"finished, recorded {summary.succeeded}; {len(submitted)} prompt ids submitted"
        )
        rows += [
            (f"ids submitted twice ({how})", str(twice), "0", verdict(twice == 0)),
            (f"manifest after retry ({how})", f"{len(keys)}/{count}", "complete", verdict(complete)),
        ]
    return rows


def _swallow(run: Any) -> None:
    try:
        run()
    except Exception as exc:  # the stop raises: that is the point
        LOG.debug("first try ended: %s", exc)


# --- main ----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {PARTS}")
    parser.add_argument("--items", type=int, default=1000, help="items of the CPU batch")
    parser.add_argument("--mapped", type=int, default=100, help="mapped tasks to compare with")
    parser.add_argument("--seconds", type=float, default=0.2, help="seconds per prompt (throughput)")
    parser.add_argument("--throughput-seconds", type=float, default=20, help="ideal length of that run")
    parser.add_argument("--in-flight", type=int, default=2, help="max_in_flight (throughput)")
    parser.add_argument("--big", type=int, default=10000, help="items of the memory run")
    parser.add_argument("--resume-items", type=int, default=400)
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {sorted(unknown)}; choose from {PARTS}")
    quiet_logs()
    LOG.setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette\.testclient` is deprecated")
    print("== batches: ComfyUIBatchOperator's BatchRun on stand-in servers")
    print(f"   machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    table: list[tuple[str, str, str, str]] = []
    runners = {"cpu": part_cpu, "throughput": part_throughput, "memory": part_memory, "resume": part_resume}
    for part in parts:
        print(f"-- {part}")
        with scratch_dir(f"comfy-bench-batch-{part}-", memory=True) as scratch:
            table += runners[part](args, scratch)
    width = max(len(row[0]) for row in table)
    print()
    for name, value, target, result in table:
        print(f"   {name:<{width}}  {value:>12}  {target:>9}  {result}")


if __name__ == "__main__":
    main()

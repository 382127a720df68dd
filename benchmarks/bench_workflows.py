"""Cost of ``prepare_workflow`` on web-UI saves, given an already parsed object_info; no server needed.

Two figures, each measured side by side in one run:

1. template-sized workflows (every web-UI fixture of ``tests/workflows/data/ui``, 1 to 22 nodes),
   converted with the recorded ComfyUI 0.3.64 object_info: ``prepare_workflow`` as it is, and the
   previous design, which deep-copied the whole object_info (about 0.5 MB) on every call
   (emulated here by passing a fresh ``copy.deepcopy`` of it). Target: median ≤ 2 ms per workflow.
2. size scaling: the largest fixture tiled into workflows of about 20, 100 and 1,000 nodes.
   Target: the 1,000-node workflow ≤ 50 ms, and linear (its cost per node at most 1.5x that of
   the 100-node one).

Each figure is the median of ``--runs`` calls, as CPU time of this process (what the conversion
costs, whatever else runs on the machine) and as wall time; the verdict uses the CPU time.

    .venv/bin/python benchmarks/bench_workflows.py [--runs 50]
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import machine, verdict

from airflow_comfy.workflows import load_object_info, prepare_workflow

ROOT = Path(__file__).resolve().parents[1]
UI_DIR = ROOT / "tests" / "workflows" / "data" / "ui"
OBJECT_INFO = ROOT / "airflow_comfy" / "testing" / "data" / "object_info.json.gz"  # recorded, 0.3.64
TEMPLATE_TARGET_MS = 2.0
LARGE_TARGET_MS = 50.0
LINEARITY = 1.5


def measure(call: Callable[[], Any], runs: int) -> tuple[float, float]:
    """Median CPU and wall milliseconds of ``call`` over ``runs`` calls (after one warm-up)."""
    call()
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(runs):
        c0, w0 = time.process_time(), time.perf_counter()
        call()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu) * 1e3, statistics.median(wall) * 1e3


def tiled(workflow: dict[str, Any], copies: int) -> dict[str, Any]:
    """``copies`` disjoint copies of a web-UI workflow without subgraphs, in one graph."""
    node_step = max(int(node["id"]) for node in workflow["nodes"]) + 1
    link_step = max(int(link[0]) for link in workflow["links"]) + 1
    nodes: list[dict[str, Any]] = []
    links: list[list[Any]] = []
    for k in range(copies):
        for original in workflow["nodes"]:
            node = copy.deepcopy(original)
            node["id"] = int(node["id"]) + k * node_step
            for slot in node.get("inputs") or []:
                if slot.get("link") is not None:
                    slot["link"] = int(slot["link"]) + k * link_step
            for slot in node.get("outputs") or []:
                slot["links"] = [int(i) + k * link_step for i in slot.get("links") or []]
            nodes.append(node)
        for link in workflow["links"]:
            links.append(
                [
                    link[0] + k * link_step,
                    link[1] + k * node_step,
                    link[2],
                    link[3] + k * node_step,
                    *link[4:],
                ]
            )
    return {**workflow, "nodes": nodes, "links": links}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="calls per figure (default 50)")
    args = parser.parse_args()
    info = load_object_info(json.loads(gzip.decompress(OBJECT_INFO.read_bytes())))
    print("== prepare_workflow on web-UI saves, object_info already parsed (no server)")
    print(f"   machine: {machine()}")
    print(f"   object_info: {len(info)} node classes, {len(json.dumps(info)) / 1024:.0f} KiB as JSON")

    print("\n-- 1. template-sized workflows: now vs deep copy of object_info per call (previous design)")
    print(f"   {'workflow':<34} {'nodes':>5}  {'now cpu':>8} {'now wall':>9}  {'copy cpu':>9} {'ratio':>6}")
    medians: list[float] = []
    largest: tuple[int, dict[str, Any]] = (0, {})
    for path in sorted(UI_DIR.glob("*.json")):
        workflow = json.loads(path.read_text())
        size = len(workflow["nodes"])
        if size > largest[0] and not (workflow.get("definitions") or {}).get("subgraphs"):
            largest = (size, workflow)
        now_cpu, now_wall = measure(lambda w=workflow: prepare_workflow(w, object_info=info), args.runs)
        old_cpu, _ = measure(
            lambda w=workflow: prepare_workflow(w, object_info=copy.deepcopy(info)), max(5, args.runs // 5)
        )
        medians.append(now_cpu)
        print(
            f"   {path.stem:<34} {size:>5}  {now_cpu:6.2f} ms {now_wall:6.2f} ms  {old_cpu:6.1f} ms "
            f"{old_cpu / now_cpu:5.0f}x"
        )
    overall = statistics.median(medians)
    print(
        f"   median over {len(medians)} workflows: {overall:.2f} ms CPU  "
        f"target ≤ {TEMPLATE_TARGET_MS:.0f} ms  {verdict(overall <= TEMPLATE_TARGET_MS)}"
    )

    print(f"\n-- 2. size scaling: a {largest[0]}-node template tiled")
    print(f"   {'nodes':>6}  {'cpu':>9} {'wall':>9}  {'cpu per node':>13}")
    per_node: dict[int, float] = {}
    cpu_ms: dict[int, float] = {}
    for copies in (1, max(1, 100 // largest[0]), max(1, 1000 // largest[0])):
        workflow = tiled(largest[1], copies)
        runs = max(5, args.runs // copies)
        cpu, wall = measure(lambda w=workflow: prepare_workflow(w, object_info=info), runs)
        size = len(workflow["nodes"])
        per_node[size], cpu_ms[size] = cpu * 1e3 / size, cpu
        print(f"   {size:>6}  {cpu:6.1f} ms {wall:6.1f} ms  {per_node[size]:8.1f} µs")
    sizes = sorted(per_node)
    big, mid = sizes[-1], sizes[-2]
    growth = per_node[big] / per_node[mid]
    print(
        f"   {big} nodes: {cpu_ms[big]:.1f} ms CPU  target ≤ {LARGE_TARGET_MS:.0f} ms  "
        f"{verdict(cpu_ms[big] <= LARGE_TARGET_MS)}"
    )
    print(
        f"   cost per node, {big} vs {mid} nodes: {growth:.2f}x  target ≤ {LINEARITY}x (linear)  "
        f"{verdict(growth <= LINEARITY)}"
    )


if __name__ == "__main__":
    main()

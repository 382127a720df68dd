"""The cost of the operator's own path, side by side with a bare client, in one run.

1. ``ComfyUIPromptOperator.execute`` (validation on, WebSocket wait) vs a bare WebSocket client on a
   tiny prompt, alternating, after a first (warm-up) task of this process — one new operator per
   run, as Airflow makes one per task. Target: median ratio ≤ 1.3.
2. HTTP requests of one blocking run through the hook (socket opened first): target 2
   (POST /prompt, GET /history/<id>).
3. Client CPU while waiting on a 1,000-node workflow (40 chains of 25 nodes; ComfyUI sends a
   ``progress_state`` listing every node after each node) vs the server's own run time
   (``execution_start`` → ``execution_success`` in its history). Target ≤ 0.3.

    .venv/bin/python benchmarks/bench_core.py [--runs 20] [--nodes 1000]
    COMFYUI_URL=http://127.0.0.1:8188 .venv/bin/python benchmarks/bench_core.py --runs 10
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from typing import Any

from common import (
    alternate,
    header,
    now,
    quiet_airflow_home,
    quiet_logs,
    server_under_test,
    tiny_workflow,
    verdict,
)

quiet_airflow_home()

from bare_client import BareClient  # noqa: E402

from airflow_comfy.hooks.comfyui import ComfyUIHook  # noqa: E402
from airflow_comfy.hooks.connection import ComfyUISettings  # noqa: E402
from airflow_comfy.operators.comfyui import ComfyUIPromptOperator  # noqa: E402
from airflow_comfy.protocol.ids import new_client_id  # noqa: E402

quiet_logs()
CONN_ID = "comfy_bench_core"


class TI:
    """What the operator reads from ``context["ti"]``."""

    def __init__(self, run: int) -> None:
        self.dag_id, self.run_id, self.task_id = "bench", f"run-{run}", "render"
        self.map_index, self.try_number = -1, 1

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def wide_workflow(nodes: int, color: int, depth: int = 25) -> dict[str, Any]:
    """Chains of ``depth`` nodes (EmptyImage, ImageInvert..., SaveImage) up to ``nodes`` nodes in all.

    Chains, not one chain: ComfyUI validates links recursively, so a chain deeper than Python's
    recursion limit is rejected by the real server (and the stand-in) alike.
    """
    workflow: dict[str, Any] = {}
    node = itertools.count(1)
    for chain in range(max(nodes // depth, 1)):
        first = str(next(node))
        inputs = {"width": 8, "height": 8, "batch_size": 1, "color": color + chain}
        workflow[first] = {"class_type": "EmptyImage", "inputs": inputs}
        previous = first
        for _ in range(depth - 2):
            current = str(next(node))
            workflow[current] = {"class_type": "ImageInvert", "inputs": {"image": [previous, 0]}}
            previous = current
        save = {"images": [previous, 0], "filename_prefix": "bench/wide"}
        workflow[str(next(node))] = {"class_type": "SaveImage", "inputs": save}
    return workflow


def server_run_seconds(history_entry: dict[str, Any]) -> float:
    stamps = {name: data.get("timestamp") for name, data in history_entry["status"]["messages"]}
    return (stamps["execution_success"] - stamps["execution_start"]) / 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--nodes", type=int, default=None, help="size of workflow 3 (default 1000; 200 on the stand-in)"
    )
    args = parser.parse_args()
    colors = itertools.count(5000)
    with server_under_test() as (url, standin):
        header("operator path vs bare client; requests per run; CPU on a large workflow", url)
        os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps({"conn_type": "comfyui", "host": url})
        bare = BareClient(url)
        runs = itertools.count()

        def operator(_i: int) -> float:
            op = ComfyUIPromptOperator(
                task_id="render", workflow=tiny_workflow("bench/op", next(colors)), comfyui_conn_id=CONN_ID
            )
            started = now()
            assert op.execute({"ti": TI(next(runs))})  # type: ignore[arg-type]
            return now() - started

        def through_bare(_i: int) -> float:
            started = now()
            files, _ended = bare.run(tiny_workflow("bench/bare", next(colors)))
            assert files
            return now() - started

        operator(0)  # the first task of the process fetches the node catalogue
        op_s, bare_s = alternate([("operator.execute", operator), ("bare client", through_bare)], args.runs)
        print(op_s.line())
        print(bare_s.line())
        ratio = op_s.median / bare_s.median
        print(f"1. ratio operator/bare (median): {ratio:.2f}  target ≤ 1.3  {verdict(ratio <= 1.3)}")

        hook = ComfyUIHook(settings=ComfyUISettings(conn_id="bench", base_url=url))
        client = hook.client()
        client_id = new_client_id()
        socket = client.websocket(client_id).connect()
        before = standin.request_count() if standin else 0
        answer = client.submit_prompt(tiny_workflow("bench/count", next(colors)), client_id=client_id)
        client.wait_for_prompt(answer["prompt_id"], client_id=client_id, websocket=socket, timeout=60)
        if standin:
            sent = [f"{m} {p}" for m, p in standin.requests(before) if p != "/ws"]
        else:
            sent = ["(count on the stand-in only)"]
        print(
            f"2. HTTP requests of one blocking run: {len(sent)} {sent}  target 2  {verdict(len(sent) == 2)}"
        )

        client_id = new_client_id()
        socket = client.websocket(client_id).connect()
        nodes = args.nodes or (200 if standin else 1000)  # the stand-in takes ~0.2 s per node
        answer = client.submit_prompt(wide_workflow(nodes, next(colors) * 100), client_id=client_id)
        cpu0 = time.process_time()
        client.wait_for_prompt(answer["prompt_id"], client_id=client_id, websocket=socket, timeout=1800)
        cpu = time.process_time() - cpu0
        server = server_run_seconds(client.get_history(answer["prompt_id"])[answer["prompt_id"]])
        share = cpu / server if server > 0 else float("inf")
        print(
            f"3. {nodes}-node workflow: client CPU {cpu:.2f} s, server run {server:.2f} s, "
            f"ratio {share:.2f}  target ≤ 0.3  {verdict(share <= 0.3)}"
        )
        hook.close()
        bare.close()


if __name__ == "__main__":
    main()

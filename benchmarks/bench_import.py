"""Import time of the operators (and sensors) module beyond ``airflow.sdk``, in fresh interpreters.

DAG files are parsed often, so what ``from airflow_comfy.operators.comfyui import …`` adds on top of
``import airflow.sdk`` matters. Each run is a new ``python`` process that imports ``airflow.sdk``,
then times the provider modules; median of ``--runs``. Target ≤ 50 ms, and none of requests,
websocket, httpx, aiohttp, PIL newly imported by the provider modules (airflow.sdk may import some
of them itself: those are listed separately). No server needed.

    .venv/bin/python benchmarks/bench_import.py [--runs 9]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from common import machine

TARGET_MS = 50.0
HEAVY = ("requests", "websocket", "httpx", "aiohttp", "PIL", "airflow_comfy.workflows", "yaml")
PROBE = """
import json, sys, time
t0 = time.perf_counter()
import airflow.sdk
t1 = time.perf_counter()
before = set(sys.modules)
import {module}
t2 = time.perf_counter()
heavy = {heavy!r}
new = sorted(set(sys.modules) - before)
print(json.dumps({{
    "sdk_ms": (t1 - t0) * 1e3,
    "module_ms": (t2 - t1) * 1e3,
    "heavy_new": [m for m in new if m.split(".")[0] in heavy or m in heavy],
    "heavy_by_sdk": [m for m in heavy if m in before],
    "new_top": sorted({{m.split(".")[0] for m in new}}),
}}))
"""


def probe(module: str) -> dict:
    code = PROBE.format(module=module, heavy=HEAVY)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="fresh processes per module (default 9)")
    args = parser.parse_args()
    print("== import time beyond airflow.sdk (fresh processes)")
    print(f"   machine: {machine()}")
    for module in ("airflow_comfy.operators.comfyui", "airflow_comfy.sensors.comfyui"):
        results = [probe(module) for _ in range(args.runs)]
        times = [r["module_ms"] for r in results]
        sdk = statistics.median(r["sdk_ms"] for r in results)
        median = statistics.median(times)
        print(
            f"{module:<34} median {median:6.1f} ms  (min {min(times):.1f}, max {max(times):.1f}; "
            f"airflow.sdk itself {sdk:.0f} ms)  target ≤ {TARGET_MS:.0f} ms  "
            f"{'MET' if median <= TARGET_MS else 'MISSED'}"
        )
        heavy_new = sorted({m for r in results for m in r["heavy_new"]})
        print(f"   heavy modules it imports: {', '.join(heavy_new) or 'none'}")
        print(f"   already imported by airflow.sdk: {', '.join(results[0]['heavy_by_sdk']) or 'none'}")
        print(f"   new top-level packages: {', '.join(results[0]['new_top'])}")


if __name__ == "__main__":
    main()

"""The README's main job: run an example DAG end to end and say where its output files are.

    python -m airflow_comfy.testing.demo --dags-folder dags_examples [--dag comfyui_single_prompt]

Against the real ComfyUI at ``$COMFYUI_URL`` (or ``--url``) when set, otherwise against a stand-in
server started for the run. Airflow's home (SQLite metadata DB) is ``./.airflow-demo`` and the
outputs go under ``./comfyui-outputs`` unless told otherwise.

Invariant: the exit code is 0 only when the DAG run and every task in it succeeded, and every path
printed as an output exists on disk.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_comfy.testing.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dags-folder", default="dags_examples", help="folder with the example DAGs")
    parser.add_argument("--dag", default="comfyui_single_prompt", help="the DAG id to run")
    parser.add_argument(
        "--url", default=os.environ.get("COMFYUI_URL"), help="a real ComfyUI (default $COMFYUI_URL)"
    )
    parser.add_argument("--output-dir", default="comfyui-outputs", help="where the DAG writes its outputs")
    parser.add_argument("--airflow-home", default=".airflow-demo", help="AIRFLOW_HOME for the run")
    return parser.parse_args(argv)


@contextmanager
def _server(url: str | None, home: Path) -> Iterator[str]:
    if url:
        print(f"Using the ComfyUI at {url}")
        yield url.rstrip("/")
        return
    from airflow_comfy.testing import StandInServer

    with StandInServer(base_dir=home / "comfyui") as server:
        print(f"Started the stand-in ComfyUI at {server.url} (files under {home / 'comfyui'})")
        yield server.url


def _files(value: Any) -> list[str]:
    """Every existing file path inside a task's return value (lists and dicts are searched)."""
    if isinstance(value, str):
        return [value] if Path(value).is_file() else []
    if isinstance(value, dict):
        return [p for item in value.values() for p in _files(item)]
    if isinstance(value, list | tuple):
        return [p for item in value for p in _files(item)]
    return []


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    home = Path(args.airflow_home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    outputs = Path(args.output_dir).resolve()
    # Airflow reads its configuration when first imported: set it up before that.
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ["AIRFLOW_COMFY_OUTPUT_DIR"] = str(outputs)
    from airflow_comfy.testing.dags import run_dag

    with _server(args.url, home) as url:
        result = run_dag(args.dag, Path(args.dags_folder).resolve(), comfyui_url=url)
    print(f"\nDAG {args.dag}: {result.state}")
    for (task_id, map_index), state in sorted(result.task_states.items()):
        label = task_id if map_index < 0 else f"{task_id}[{map_index}]"
        print(f"  {label:<24} {state}")
    files = sorted({p for value in result.return_values.values() for p in _files(value)})
    if files:
        print(f"\nOutput files ({len(files)}), under {outputs}:")
        for path in files:
            print(f"  {path}")
    if not result.succeeded:
        print("\nThe run did not succeed; see the task logs above.", file=sys.stderr)
        return 1
    if not files:
        print("\nThe run succeeded but produced no output file.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

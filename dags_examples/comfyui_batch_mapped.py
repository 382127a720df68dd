"""A batch: one ComfyUI prompt per (color, size) pair, with dynamic task mapping.

``ComfyUIPromptOperator.partial(...).expand(overrides=...)`` creates one mapped task instance per
variant; each gets its own deterministic prompt id (the map index is part of it), so a retried
instance re-attaches to its own prompt. ``deferrable=True`` waits in the triggerer, so a batch of
hundreds holds no worker slots while the GPU works through the queue.
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import dag, task

from airflow_comfy.operators.comfyui import ComfyUIPromptOperator

WORKFLOW = Path(__file__).parent / "workflows" / "scale_blur_save.json"
OUTPUT_ROOT = os.environ.get("AIRFLOW_COMFY_OUTPUT_DIR", "/tmp/airflow-comfy-outputs")


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["comfyui", "example"],
)
def comfyui_batch_mapped() -> None:
    @task
    def variants() -> list[dict[str, object]]:
        """The batch to render; in real life from a table, a bucket listing or a prompt file."""
        colors = [0xFF0000, 0x00FF00, 0x0000FF]
        sizes = [(96, 64), (64, 96)]
        return [
            {"Canvas.color": color, "Resize.width": w, "Resize.height": h, "Save.filename_prefix": "batch/v"}
            for color in colors
            for (w, h) in sizes
        ]

    renders = ComfyUIPromptOperator.partial(
        task_id="render",
        workflow=str(WORKFLOW),
        output_dir=OUTPUT_ROOT + "/{{ dag.dag_id }}/{{ run_id }}/{{ ti.map_index }}",
        deferrable=True,
        check_interval=0.5,
        timeout=900,
        retries=1,
    ).expand(overrides=variants())

    @task
    def collect(paths_per_variant: list[list[str]]) -> int:
        files = [p for paths in paths_per_variant for p in paths]
        print(f"{len(files)} images rendered")
        return len(files)

    collect(renders.output)


comfyui_batch_mapped()

"""A deferred batch: items computed by an upstream task, rendered while no worker slot waits.

1. ``variants`` returns the items as a list (an XCom): one blur radius per item, keyed by name.
2. ``render`` (:class:`~airflow_comfy.operators.batch.ComfyUIBatchOperator`, ``deferrable=True``)
   fills every server's slots (``max_in_flight``), then hands the wait to the triggerer
   (:class:`~airflow_comfy.triggers.batch.ComfyUIBatchTrigger`) and frees its worker slot; each time
   one of its prompts ends, the task comes back to a worker, records it in the manifest, fills the
   freed slot and defers again. Between those visits the batch's state is in the manifest and on
   the servers, not in Airflow's database.
3. ``summary`` prints the counts and where the manifest is.

Deferral pays off for renders of minutes (a worker is free for almost all of them); for renders of
seconds the blocking form (``comfyui_batch_products``) keeps the GPUs busier. See the guide
``docs/pages/batches.md``. Outputs go to ``<output root>/comfyui_batch_deferred/<run id>/``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import dag, task

from airflow_comfy.operators.batch import ComfyUIBatchOperator

HERE = Path(__file__).parent
OUTPUT_ROOT = os.environ.get("AIRFLOW_COMFY_OUTPUT_DIR", "/tmp/airflow-comfy-outputs")


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["comfyui", "example", "batch"],
)
def comfyui_batch_deferred() -> None:
    @task
    def variants() -> list[dict[str, Any]]:
        """Six items: each sets the blur radius and the canvas colour (overrides by node title)."""
        return [
            {
                "key": f"blur-{radius}",
                "overrides": {"Blur.blur_radius": radius, "Canvas.color": 0x2050A0 + radius},
            }
            for radius in range(1, 7)
        ]

    renders = ComfyUIBatchOperator(
        task_id="render",
        workflow=str(HERE / "workflows" / "scale_blur_save.json"),
        items=variants(),
        overrides={"Save.filename_prefix": "deferred/render"},
        output_dir=OUTPUT_ROOT + "/{{ dag.dag_id }}/{{ run_id }}",
        deferrable=True,
        max_in_flight=3,  # deferred: keep work queued on each server while the task comes back
        check_interval=0.5,
        retries=1,
    )

    @task
    def summary(batch: dict[str, Any]) -> str:
        line = f"{batch['succeeded']} of {batch['total']} rendered, {batch['failed']} failed"
        line += f"; manifest: {batch['manifest']}"
        print(line)
        return line

    summary(renders.output)


comfyui_batch_deferred()

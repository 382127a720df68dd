"""A mapped batch of 20 blocking prompts for the Celery deployment test (copied into its DAGs folder).

Blocking waits (not deferrable) so each task holds a Celery worker slot while its prompt waits: with
the stand-ins holding their queues, more than one worker's concurrency of prompts at once proves
both workers took tasks.
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import dag

from airflow_comfy.operators.comfyui import ComfyUIPromptOperator

WORKFLOW = Path(__file__).parent / "workflows" / "scale_blur_save.json"
OUTPUT_ROOT = os.environ.get("AIRFLOW_COMFY_OUTPUT_DIR", "/tmp/airflow-comfy-outputs")


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, tags=["test"])
def comfyui_batch_20() -> None:
    ComfyUIPromptOperator.partial(
        task_id="render",
        workflow=str(WORKFLOW),
        output_dir=OUTPUT_ROOT + "/{{ dag.dag_id }}/{{ run_id }}/{{ ti.map_index }}",
        check_interval=0.5,
        timeout=600,
        retries=0,
    ).expand(
        overrides=[{"Canvas.color": 0x010101 * i, "Save.filename_prefix": f"b20/{i}"} for i in range(20)]
    )


comfyui_batch_20()

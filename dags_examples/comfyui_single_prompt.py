"""One ComfyUI workflow per DAG run, its images downloaded and handed to a downstream task.

The workflow file is in API format with node titles ("Canvas", "Resize", "Blur", "Save"), so the
overrides below read like the ComfyUI web UI. Connection: ``comfyui_default``.
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
    params={"color": 3368601, "blur_radius": 3},
    render_template_as_native_obj=True,
)
def comfyui_single_prompt() -> None:
    generate = ComfyUIPromptOperator(
        task_id="generate",
        workflow=str(WORKFLOW),
        overrides={
            "Canvas.color": "{{ params.color }}",
            "Blur.blur_radius": "{{ params.blur_radius }}",
            "Save.filename_prefix": "airflow/{{ dag.dag_id }}",
        },
        output_dir=OUTPUT_ROOT + "/{{ dag.dag_id }}/{{ run_id }}",
        timeout=600,
        retries=2,
    )

    @task
    def report(paths: list[str]) -> list[dict[str, object]]:
        """A downstream consumer: here it only checks the files and reports their sizes."""
        return [{"path": p, "bytes": Path(p).stat().st_size} for p in paths]

    report(generate.output)


comfyui_single_prompt()

"""ETL over a folder of images: one mapped task per input file, a web-UI workflow, results stored.

1. ``list_inputs`` lists the input folder (a local folder here; an ``s3://bucket/prefix`` works the
   same way through ``ObjectStoragePath`` with the matching provider installed).
2. ``process`` is mapped over the files: each instance uploads its image to ComfyUI (``inputs``),
   runs ``invert_blur_ui.json`` — a workflow saved from the ComfyUI web UI, converted with the
   server's ``/object_info`` — with an override, and downloads the result under the output folder.
3. ``summarise`` gathers the written paths.
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import ObjectStoragePath, dag, task

from airflow_comfy.operators.comfyui import ComfyUIPromptOperator

HERE = Path(__file__).parent
INPUT_DIR = os.environ.get("AIRFLOW_COMFY_INPUT_DIR", f"file://{HERE / 'inputs'}")
OUTPUT_ROOT = os.environ.get("AIRFLOW_COMFY_OUTPUT_DIR", "/tmp/airflow-comfy-outputs")


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["comfyui", "example", "etl"],
)
def comfyui_etl_folder() -> None:
    @task
    def list_inputs() -> list[dict[str, str]]:
        folder = ObjectStoragePath(INPUT_DIR)
        files = sorted(
            str(p) for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"}
        )
        if not files:
            raise ValueError(f"no input images in {INPUT_DIR}")
        return [{"Input Image": path} for path in files]

    processed = ComfyUIPromptOperator.partial(
        task_id="process",
        workflow=str(HERE / "workflows" / "invert_blur_ui.json"),
        overrides={"Blur.blur_radius": 3, "Save.filename_prefix": "etl/{{ dag.dag_id }}"},
        input_subfolder="etl-inputs",
        output_dir=OUTPUT_ROOT + "/{{ dag.dag_id }}/{{ run_id }}",
        timeout=600,
        retries=1,
    ).expand(inputs=list_inputs())

    @task
    def summarise(paths_per_image: list[list[str]]) -> list[str]:
        return [path for paths in paths_per_image for path in paths]

    summarise(processed.output)


comfyui_etl_folder()

"""A first DAG: one ComfyUI workflow, its images downloaded and handed to the next task."""

from pathlib import Path

from airflow.sdk import dag, task

from airflow_comfy.examples import workflow_path
from airflow_comfy.operators.comfyui import ComfyUIPromptOperator


@dag(schedule=None, tags=["comfyui"])
def comfyui_first_dag() -> None:
    images = ComfyUIPromptOperator(
        task_id="generate",
        workflow=workflow_path("scale_blur_save"),  # a JSON file (API format or a web-UI save), or a dict
        overrides={"Canvas.color": 16744448, "Blur.blur_radius": 4, "Save.filename_prefix": "first/render"},
        output_dir="comfyui-outputs/{{ run_id }}",  # a local folder or s3://…; omit to keep server paths
        deferrable=True,  # wait in the triggerer
    )

    @task
    def publish(paths: list[str]) -> list[str]:
        for path in paths:
            print(f"{path}: {Path(path).stat().st_size} bytes")
        return paths

    publish(images.output)


comfyui_first_dag()

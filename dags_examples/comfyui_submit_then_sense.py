"""Submit now, wait elsewhere: ``wait_for_completion=False`` then ``ComfyUIPromptSensor``.

Useful when submitting and waiting belong to different parts of a DAG (e.g. submit many, then sense
each), or when the wait should run in ``reschedule`` mode so no worker slot is held between pokes.
"""

from __future__ import annotations

from pathlib import Path

import pendulum
from airflow.sdk import dag, task

from airflow_comfy.operators.comfyui import ComfyUIPromptOperator
from airflow_comfy.sensors.comfyui import ComfyUIPromptSensor

WORKFLOW = Path(__file__).parent / "workflows" / "scale_blur_save.json"


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["comfyui", "example"],
)
def comfyui_submit_then_sense() -> None:
    submit = ComfyUIPromptOperator(
        task_id="submit",
        workflow=str(WORKFLOW),
        overrides={"Save.filename_prefix": "sensed/img"},
        wait_for_completion=False,
    )
    wait = ComfyUIPromptSensor(
        task_id="wait",
        prompt_id="{{ ti.xcom_pull(task_ids='submit') }}",
        poke_interval=1,
        timeout=600,
        mode="poke",
    )

    @task
    def use(paths: list[str]) -> str:
        """Downstream work on the server-side paths (``output/<subfolder>/<file>``)."""
        return ", ".join(paths)

    submit >> wait
    use(wait.output)


comfyui_submit_then_sense()

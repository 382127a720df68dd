"""Schedule on "new images": a producer DAG emits an Asset event per render, a consumer DAG runs on it.

- ``comfyui_assets_producer``: :class:`ComfyUIPromptOperator` with ``outlets=[RENDERS]``. On success
  the operator sets the event's ``extra`` to ``{"prompt_id", "paths", "outputs", "comfyui_url"}``
  (the returned paths, the output records with their ``/view`` URLs, no credentials).
- ``comfyui_assets_consumer``: ``schedule=[RENDERS]``, so Airflow starts it after every producer
  success; its task reads the latest event of the asset through ``inlet_events``. Run alone before
  any producer run (``airflow dags test comfyui_assets_consumer``), it skips and says why.

Connection: ``comfyui_default``. Downloads go under ``AIRFLOW_COMFY_OUTPUT_DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import Asset, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from airflow_comfy.operators.comfyui import ComfyUIPromptOperator

WORKFLOW = Path(__file__).parent / "workflows" / "scale_blur_save.json"
OUTPUT_ROOT = os.environ.get("AIRFLOW_COMFY_OUTPUT_DIR", "/tmp/airflow-comfy-outputs")
RENDERS = Asset(name="comfyui_renders", uri="comfyui://renders/scale_blur_save")


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["comfyui", "example"],
)
def comfyui_assets_producer() -> None:
    ComfyUIPromptOperator(
        task_id="render",
        workflow=str(WORKFLOW),
        overrides={"Save.filename_prefix": "assets/{{ dag.dag_id }}"},
        output_dir=OUTPUT_ROOT + "/{{ dag.dag_id }}/{{ run_id }}",
        timeout=600,
        outlets=[RENDERS],
    )


@dag(
    schedule=[RENDERS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["comfyui", "example"],
)
def comfyui_assets_consumer() -> None:
    @task(inlets=[RENDERS])
    def use_new_images(inlet_events: Any = None) -> dict[str, Any]:
        """The latest event of the asset: which prompt made which files."""
        events = inlet_events[RENDERS]
        if not events:  # e.g. `airflow dags test comfyui_assets_consumer` before any producer run
            raise AirflowSkipException(
                f"no event of asset {RENDERS.name!r} yet: run comfyui_assets_producer first"
            )
        event = events[-1]
        paths = list(event.extra["paths"])
        print(f"prompt {event.extra['prompt_id']} rendered {len(paths)} file(s): {paths}")
        return {"prompt_id": event.extra["prompt_id"], "paths": paths}

    use_new_images()


comfyui_assets_producer()
comfyui_assets_consumer()

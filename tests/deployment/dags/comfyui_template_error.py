"""A template that runs without a logical date cannot render: the tasks must fail at once, not retry.

Copied into the DAGs folder of the LocalExecutor deployment test. ``{{ ts_nodash }}`` is undefined in a
run triggered without a logical date; both the plain and the mapped operator have retries left.
"""

from __future__ import annotations

import datetime

import pendulum
from airflow.sdk import dag

from airflow_comfy.operators.comfyui import ComfyUIPromptOperator

WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}
}
RETRIES = {"retries": 2, "retry_delay": datetime.timedelta(minutes=10)}


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, tags=["test"])
def comfyui_template_error() -> None:
    ComfyUIPromptOperator(task_id="plain", workflow=WORKFLOW, output_dir="/tmp/{{ ts_nodash }}", **RETRIES)
    ComfyUIPromptOperator.partial(
        task_id="mapped", workflow=WORKFLOW, output_dir="/tmp/{{ ts_nodash }}", **RETRIES
    ).expand(overrides=[{}, {}])


comfyui_template_error()

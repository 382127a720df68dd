"""Run the workflow saved on the ComfyUI server as "examples/invert_blur", always its current version.

People design and revise workflows in ComfyUI's web UI and save them there (Workflow > Save); the
server keeps them in its user data. This DAG names one by ``comfyui://workflows/<name>.json``: each run
reads the version saved now (through the connection ``comfyui_default``: same auth and TLS as the
prompts), converts it from the web-UI format, runs it on an uploaded image, and records which version
ran (the SHA-256 of the saved file, XCom ``workflow_sha256``). A new save is new work; a retry of
the same version re-attaches to its prompt. A name that is not saved fails at once, listing the
closest saved names; ``airflow-comfy list --url URL`` shows what a server has.

To try it on the stand-in, save ``workflows/invert_blur_ui.json`` there as the web UI would:
``curl -X POST --data-binary @dags_examples/workflows/invert_blur_ui.json
'http://127.0.0.1:8188/userdata/workflows%2Fexamples%2Finvert_blur.json'``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import dag, get_current_context, task

HERE = Path(__file__).parent
OUTPUT_ROOT = os.environ.get("AIRFLOW_COMFY_OUTPUT_DIR", "/tmp/airflow-comfy-outputs")


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["comfyui", "example"],
    params={"workflow": "comfyui://workflows/examples/invert_blur.json", "blur_radius": 4},
)
def comfyui_saved_workflow() -> None:
    @task
    def render() -> dict[str, Any]:
        from airflow_comfy.hooks.comfyui import ComfyUIHook
        from airflow_comfy.protocol.urls import redact_url
        from airflow_comfy.run import fail_fast
        from airflow_comfy.taskflow import run_workflow
        from airflow_comfy.workflows import SHA256_XCOM_KEY, resolve_source, saved_record

        context = get_current_context()
        params = context["params"]
        hook = ComfyUIHook("comfyui_default")
        with fail_fast():  # a name that is not saved cannot appear on a retry: no retries used
            workflow, saved = resolve_source(params["workflow"], hook, where=redact_url(hook.base_url))
        if saved is not None:
            context["ti"].xcom_push(key=SHA256_XCOM_KEY, value=saved.sha256)
        paths = run_workflow(
            workflow,
            inputs={"Input Image": HERE / "inputs" / "harbour.png"},
            overrides={"Blur.blur_radius": params["blur_radius"], "Save.filename_prefix": "saved/harbour"},
            output_dir=f"{OUTPUT_ROOT}/{context['dag'].dag_id}/{context['run_id']}",
            timeout=600,
            context=context,
        )
        return {"paths": paths, **(saved_record(saved) if saved else {})}

    render()


comfyui_saved_workflow()

"""A batch in one task: every product in every style, rendered from a CSV, then a report from the manifest.

1. ``render`` (:class:`~airflow_comfy.operators.batch.ComfyUIBatchOperator`) reads
   ``inputs/products_styles.csv`` (4 products x 3 styles = 12 rows) as a stream and runs
   ``scale_blur_save.json`` once per row: ``fields`` maps the CSV columns to the workflow's inputs
   (``color`` → the ``Canvas`` node, ``width``/``height`` → ``Resize``, ``blur_radius`` → ``Blur``);
   the ``render`` column names each item (``key_field``). At most ``max_in_flight`` prompts are
   queued or running on each server of the connection (``extra.hosts`` adds servers); the task
   returns the manifest's path and the counts, not the 12 paths.
2. ``report`` reads the manifest (``manifest.jsonl``, one line per item with its status, prompt id,
   server, outputs and times) with :func:`airflow_comfy.batch.read_manifest` and returns a summary.

Outputs go to ``<output root>/comfyui_batch_products/<run id>/``: the manifest and one folder per item.
The root is ``AIRFLOW_COMFY_OUTPUT_DIR`` (``file://`` when it is a local folder). Point it at object
storage with a URI, e.g. ``AIRFLOW_COMFY_OUTPUT_DIR=s3://aws_default@my-bucket/renders`` (the
connection id before ``@``; needs ``apache-airflow-providers-amazon``): the downloads and the
manifest go there through ``ObjectStoragePath``. The items can come from object storage as well
(``AIRFLOW_COMFY_BATCH_ITEMS=s3://…/products_styles.csv``).

A retry of ``render`` skips the items its manifest lists, re-attaches to the prompts still queued or
running and submits only the rest; ``{{ run_id }}`` in the path gives every run its own manifest.
See the guide ``docs/pages/batches.md``.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import dag, task

from airflow_comfy.operators.batch import ComfyUIBatchOperator

HERE = Path(__file__).parent
ITEMS = os.environ.get("AIRFLOW_COMFY_BATCH_ITEMS", f"file://{HERE / 'inputs' / 'products_styles.csv'}")
OUTPUT_ROOT = os.environ.get("AIRFLOW_COMFY_OUTPUT_DIR", "/tmp/airflow-comfy-outputs")
OUTPUT_URI = OUTPUT_ROOT if "://" in OUTPUT_ROOT else f"file://{OUTPUT_ROOT}"


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["comfyui", "example", "batch"],
)
def comfyui_batch_products() -> None:
    renders = ComfyUIBatchOperator(
        task_id="render",
        workflow=str(HERE / "workflows" / "scale_blur_save.json"),
        items=ITEMS,
        key_field="render",
        fields={
            "color": "Canvas.color",
            "width": "Resize.width",
            "height": "Resize.height",
            "blur_radius": "Blur.blur_radius",
        },
        overrides={"Save.filename_prefix": "products/render"},  # the same for every item
        output_dir=OUTPUT_URI + "/{{ dag.dag_id }}/{{ run_id }}",
        max_in_flight=3,  # per server: enough to keep its GPU busy, few enough to share it
        max_failed=0.1,  # up to 10 % of the items may fail; the manifest says which and why
        check_interval=0.5,
        progress_interval=10,
        retries=1,
    )

    @task
    def report(batch: dict[str, Any]) -> dict[str, Any]:
        """Counts per status and per server, the failures, and the first output of each product."""
        from airflow_comfy.batch import read_manifest

        statuses: Counter[str] = Counter()
        servers: Counter[str] = Counter()
        failures: dict[str, str] = {}
        samples: dict[str, str] = {}
        outputs = 0
        for record in read_manifest(batch["manifest"]):
            statuses[record["status"]] += 1
            if record["status"] == "failed":
                if len(failures) < 10:  # a report, not a copy of the manifest
                    failures[record["key"]] = record["error"]
                continue
            servers[record["server"]] += 1
            outputs += len(record["outputs"])
            product = record["key"].split("-", 1)[0]
            if record["outputs"]:
                samples.setdefault(product, record["outputs"][0])
        summary = {
            "manifest": batch["manifest"],
            "succeeded": statuses["succeeded"],
            "failed": statuses["failed"],
            "outputs": outputs,
            "per_server": dict(servers),
            "failures": failures,
            "samples": [samples[product] for product in sorted(samples)],
        }
        print(
            f"{summary['succeeded']} of {batch['total']} renders succeeded, {summary['failed']} failed, "
            f"{outputs} files; per server: {summary['per_server']}; manifest: {batch['manifest']}"
        )
        for key, error in failures.items():
            print(f"  {key}: {error}")
        return summary

    report(renders.output)


comfyui_batch_products()

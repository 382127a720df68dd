"""Helpers of the batch tests: a batch run on stand-in servers with a fake task instance."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from operators.support import FakeTI, image_workflow, make_context

from airflow_comfy.batch.options import make_options
from airflow_comfy.batch.runner import BatchRun
from airflow_comfy.batch.task import batch_for_task
from airflow_comfy.hooks.comfyui import ComfyUIHook
from airflow_comfy.hooks.connection import ComfyUISettings
from airflow_comfy.testing import StandInServer

FAST = {"check_interval": 0.2, "progress_interval": 1.0, "unreachable_grace": 30.0}
LOG = logging.getLogger("tests.batch")


def pool_hook(*servers: StandInServer) -> ComfyUIHook:
    urls = tuple(s.url for s in servers)
    settings = ComfyUISettings(
        conn_id="batch", base_url=urls[0], servers=urls, max_retries=1, retry_min_wait=0.05,
        retry_max_wait=0.1, connect_timeout=2, read_timeout=15,
    )  # fmt: skip
    return ComfyUIHook(settings=settings)


def gated_items(n: int, prefix: str = "g") -> list[dict[str, Any]]:
    """Items whose prompts each block on their own gate (``<prefix><n>``) until the test releases it."""
    return [{"key": f"k{i}", "2.gate": f"{prefix}{i}"} for i in range(n)]


def gate_workflow() -> dict[str, Any]:
    workflow = image_workflow("b/img")
    workflow["2"] = {"class_type": "StandInGate", "inputs": {"image": ["1", 0], "gate": "closed"}}
    workflow["9"]["inputs"]["images"] = ["2", 0]
    return workflow


def fail_capable_workflow() -> dict[str, Any]:
    """EmptyImage → SaveImage, plus a StandInFail node that runs only for items that wire it in
    (``{"9.images": ["5", 0]}``)."""
    workflow = image_workflow("b/img")
    workflow["5"] = {"class_type": "StandInFail", "inputs": {"image": ["1", 0], "message": "the GPU melted"}}
    return workflow


def make_run(
    hook: ComfyUIHook,
    items: Any,
    output_dir: Path | str,
    *,
    workflow: dict[str, Any] | None = None,
    try_number: int = 1,
    ti: FakeTI | None = None,
    **options: Any,
) -> BatchRun:
    ti = ti or FakeTI("batch", try_number=try_number)
    batch_options = make_options(items, output_dir, **{**FAST, **options})
    return batch_for_task(hook, make_context(ti), LOG, batch_options, workflow or image_workflow("b/img"))


def manifest_lines(output_dir: Path) -> list[dict[str, Any]]:
    path = output_dir / "manifest.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

"""A batch inside a task instance: what it is derived from, and what it publishes.

Shared by the operator (both forms) and :func:`~airflow_comfy.taskflow.run_batch`.

Invariants: the batch's identity (and so every item's prompt id) comes from the task instance
(dag_id, run_id, task_id, map_index) and the work as given (workflow — a saved one by path and
content hash —, batch-wide overrides and input files), never from the server or the try; a rejected
or unreadable workflow, or wrong options, fail the task without using its retries; the XCom and
the Asset event carry the manifest's path and the counts, never per-item paths.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from airflow_comfy.batch.options import BatchOptions
from airflow_comfy.batch.records import BatchSummary
from airflow_comfy.batch.runner import BatchRun
from airflow_comfy.protocol import urls
from airflow_comfy.run import fail_fast
from airflow_comfy.workflows import resolve_source, saved_identity

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_comfy.hooks.comfyui import ComfyUIHook


def batch_for_task(
    hook: ComfyUIHook,
    context: Context,
    log: Any,
    options: BatchOptions,
    workflow: Any,
    *,
    stop: threading.Event | None = None,
) -> BatchRun:
    """The :class:`BatchRun` of this task instance (nothing is sent to a server yet, except to read a
    workflow saved on the server)."""
    with fail_fast():
        source, saved = resolve_source(workflow, hook.client(), where=urls.redact_url(hook.base_url))
    inputs = {str(k): os.fspath(v) for k, v in (options.inputs or {}).items()}
    identity = {
        "workflow": saved_identity(saved) if saved is not None else source,
        "overrides": dict(options.overrides or {}),
        "inputs": inputs,
    }
    ti = context["ti"]
    task = (ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1))
    try_number = int(getattr(ti, "try_number", 1) or 1)
    return BatchRun(hook, task, log, options, source, identity, try_number=try_number, stop=stop)


def publish(context: Context, summary: BatchSummary, log: Any) -> dict[str, Any]:
    """The task's return value (its XCom) and one Asset event per declared Asset outlet."""
    from airflow_comfy.xcoms import emit_asset_events

    value = summary.as_xcom()
    extra = {k: value[k] for k in ("manifest", "total", "succeeded", "failed")}
    for asset in emit_asset_events(context, extra):
        log.info("Asset event for %s: batch manifest %s", asset, summary.manifest)
    return value

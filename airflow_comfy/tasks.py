"""Steps shared by the operator, the sensor and the TaskFlow helper: preparing a workflow, prompt ids,
XComs, outputs, Asset events and hook-level lineage.

Invariants:
- :func:`task_prompt_id` is a pure function of (dag_id, run_id, task_id, map_index, workflow), so
  every try of one task instance, and only it, computes the same prompt id;
- XComs pushed here never contain credentials: URLs come from ``protocol.urls`` (redacted);
- errors that no retry can fix (a rejected or unreadable workflow) become ``AirflowFailException``
  so they do not consume the task's retries;
- the ``extra`` of an Asset event emitted for an outlet is JSON-safe and credential-free too (the
  prompt id, the returned paths, the output records and the redacted server URL);
- lineage is best effort: it is recorded only where Airflow's hook lineage collector exists
  (``airflow.sdk.lineage``), and a failure to record it never fails the task.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_comfy.exceptions import ComfyUIValidationError, ComfyUIWorkflowError
from airflow_comfy.outputs import collect_paths, output_records
from airflow_comfy.protocol import errors, urls
from airflow_comfy.protocol.ids import deterministic_prompt_id
from airflow_comfy.protocol.states import PromptStatus

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_comfy.hooks.comfyui import ComfyUIHook


@contextmanager
def fail_fast() -> Iterator[None]:
    """Turn errors that cannot pass on retry into ``AirflowFailException`` (no retries used)."""
    try:
        yield
    except (ComfyUIValidationError, ComfyUIWorkflowError) as exc:
        raise AirflowFailException(str(exc)) from exc


def prepare_workflow_for(
    hook: ComfyUIHook,
    source: Any,
    overrides: Mapping[str, Any] | None,
    *,
    validate: bool,
    log: logging.Logger | None = None,
    inputs: Mapping[str, Any] | None = None,
    input_subfolder: str = "airflow",
) -> dict[str, Any]:
    """Load, convert (web-UI saves), override, upload ``inputs``, and optionally validate.

    ``inputs`` maps ``"<node>"`` or ``"<node>.<input>"`` to a local path or object-storage URI; each
    file is uploaded into ``input_subfolder`` and the server's name is wired into that input.
    """
    from airflow_comfy.inputs import wire_inputs
    from airflow_comfy.protocol.validation import validate_prompt
    from airflow_comfy.workflows import detect_format, load_workflow, prepare_workflow

    workflow = load_workflow(source)
    needs_info = validate or bool(inputs) or detect_format(workflow) == "ui"
    info = hook.get_object_info() if needs_info else None
    prepared = prepare_workflow(workflow, object_info=info, overrides=overrides)
    if inputs:
        prepared, uploads = wire_inputs(hook, prepared, inputs, subfolder=input_subfolder, object_info=info)
        if log is not None:
            for target, answer in uploads.items():
                log.info("Uploaded input for %s as %s", target, answer)
    if validate and info is not None:
        result = validate_prompt(prepared, info)
        body = {"error": result.error, "node_errors": result.node_errors}
        if result.error:
            raise errors.validation_error(body)
        if result.node_errors and log is not None:
            log.warning(
                "Some outputs of the workflow are invalid and will be skipped by ComfyUI:\n%s",
                "\n".join(errors.node_error_lines(result.node_errors)),
            )
    return prepared


def task_prompt_id(context: Context, workflow: Mapping[str, Any]) -> str:
    """The prompt id of this task instance and workflow (the same on every try)."""
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    return deterministic_prompt_id(ti.dag_id, ti.run_id, ti.task_id, map_index, workflow)


def push_prompt_xcoms(context: Context, hook: ComfyUIHook, prompt_id: str) -> None:
    """``prompt_id``, ``prompt_url`` (its history entry) and ``comfyui_url`` (the web UI)."""
    ti = context["ti"]
    base = urls.redact_url(hook.base_url)
    ti.xcom_push(key="prompt_id", value=prompt_id)
    ti.xcom_push(key="prompt_url", value=urls.endpoint(base, urls.history_path(prompt_id)))
    ti.xcom_push(key="comfyui_url", value=base)


def finish_prompt(
    context: Context,
    hook: ComfyUIHook,
    status: PromptStatus,
    output_dir: str | os.PathLike[str] | None,
    output_kinds: Iterable[str] | None,
    log: logging.Logger,
) -> list[str]:
    """Push the ``outputs`` (and ``texts``) XComs of a successful prompt; return the file paths.

    Also records the files as hook-level lineage outputs, and sets the ``extra`` of the event of
    every Asset outlet of the task (see :func:`asset_event_extra`).
    """
    ti = context["ti"]
    records = output_records(status.outputs, hook.base_url)
    ti.xcom_push(key="outputs", value=records)
    if status.texts:
        ti.xcom_push(key="texts", value=dict(status.texts))
    paths = collect_paths(hook, status.outputs, output_dir, kinds=output_kinds)
    where = f"written under {output_dir}" if output_dir else "on the ComfyUI server"
    log.info("Prompt %s succeeded with %d output file(s) %s", status.prompt_id, len(paths), where)
    for path in paths:
        log.info("  %s", path)
    record_output_lineage(hook, paths, records, downloaded=output_dir is not None)
    extra = asset_event_extra(status.prompt_id, paths, records, hook.base_url)
    for asset in emit_asset_events(context, extra):
        log.info("Asset event for %s: prompt %s, %d file(s)", asset, status.prompt_id, len(paths))
    return paths


def asset_event_extra(
    prompt_id: str, paths: Iterable[str], records: Iterable[Mapping[str, Any]], base_url: str
) -> dict[str, Any]:
    """The ``extra`` of the Asset events of a finished prompt (JSON-safe, credential-free).

    ``{"prompt_id", "paths", "outputs", "comfyui_url"}``: ``paths`` are what the task returned (the
    downloaded copies, or the server-side paths); ``outputs`` the records of the ``outputs`` XCom.
    """
    return json.loads(
        json.dumps(
            {
                "prompt_id": prompt_id,
                "paths": [str(path) for path in paths],
                "outputs": [dict(record) for record in records],
                "comfyui_url": urls.redact_url(base_url),
            }
        )
    )


def emit_asset_events(context: Context, extra: Mapping[str, Any]) -> list[Any]:
    """Merge ``extra`` into the event of every Asset (or Asset reference) outlet of the task.

    Returns those outlets. Asset aliases are left alone: an alias event needs a concrete asset,
    which the DAG author adds (``outlet_events[alias].add(Asset(...), extra=...)``).
    """
    from airflow.sdk import Asset
    from airflow.sdk.definitions.asset import AssetRef

    task = context.get("task")
    events = context.get("outlet_events")
    if task is None or events is None:
        return []
    emitted = []
    for outlet in getattr(task, "outlets", None) or ():
        if isinstance(outlet, Asset | AssetRef):
            events[outlet].extra.update(extra)
            emitted.append(outlet)
    return emitted


def hook_lineage_collector() -> Any | None:
    """Airflow's hook lineage collector, or ``None`` where this Airflow has none."""
    try:
        from airflow.sdk.lineage import get_hook_lineage_collector
    except ImportError:  # pragma: no cover - every supported Airflow (>= 3.2) has it
        return None
    return get_hook_lineage_collector()


def lineage_uri(path: str) -> str:
    """A lineage URI for a local path (``file://…``) or an object-storage URI (kept as it is)."""
    if "://" in path:
        return path
    return Path(path).expanduser().resolve().as_uri()


def record_lineage(hook: Any, *, inputs: Iterable[str] = (), outputs: Iterable[str] = ()) -> None:
    """Record ``inputs`` and ``outputs`` (URIs) as hook-level lineage of ``hook``; best effort."""
    try:
        collector = hook_lineage_collector()
        if collector is None:
            return
        for uri in inputs:
            collector.add_input_asset(context=hook, uri=uri)
        for uri in outputs:
            collector.add_output_asset(context=hook, uri=uri)
    except Exception as exc:  # lineage must never fail the task
        logging.getLogger(__name__).debug("Could not record lineage: %s", exc)


def record_output_lineage(
    hook: ComfyUIHook, paths: Iterable[str], records: Iterable[Mapping[str, Any]], *, downloaded: bool
) -> None:
    """Downloaded copies as ``file://`` or object-storage URIs; else each file's ``/view`` URL."""
    if downloaded:
        uris = [lineage_uri(path) for path in paths]
    else:
        wanted = set(paths)
        uris = [str(r["view_url"]) for r in records if r.get("server_path") in wanted and r.get("view_url")]
    record_lineage(hook, outputs=uris)

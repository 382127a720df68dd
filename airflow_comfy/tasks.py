"""Steps shared by the operator and the sensor: preparing a workflow, prompt ids, XComs, outputs.

Invariants:
- :func:`task_prompt_id` is a pure function of (dag_id, run_id, task_id, map_index, workflow), so
  every try of one task instance, and only it, computes the same prompt id;
- XComs pushed here never contain credentials: URLs come from ``protocol.urls`` (redacted);
- errors that no retry can fix (a rejected or unreadable workflow) become ``AirflowFailException``
  so they do not consume the task's retries.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
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
    """Push the ``outputs`` (and ``texts``) XComs of a successful prompt; return the file paths."""
    ti = context["ti"]
    ti.xcom_push(key="outputs", value=output_records(status.outputs, hook.base_url))
    if status.texts:
        ti.xcom_push(key="texts", value=dict(status.texts))
    paths = collect_paths(hook, status.outputs, output_dir, kinds=output_kinds)
    where = f"written under {output_dir}" if output_dir else "on the ComfyUI server"
    log.info("Prompt %s succeeded with %d output file(s) %s", status.prompt_id, len(paths), where)
    for path in paths:
        log.info("  %s", path)
    return paths

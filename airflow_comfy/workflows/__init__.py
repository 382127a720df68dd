"""Workflows as people have them: load any source, convert web-UI saves, apply per-run overrides.

``prepare_workflow`` is the one entry point operators and the CLI use: it loads a workflow from a
dict, JSON text or file, converts a web-UI save to the API format with the server's object_info
(or, for an API-format workflow, makes node ids and link references strings: templates rendered as
native objects turn them into ints), and applies overrides. Nothing here imports Airflow or opens
a network connection.

Invariant: every public function returns a new dict and reports unusable input as
:class:`~airflow_comfy.exceptions.ComfyUIWorkflowError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow_comfy.exceptions import ComfyUIWorkflowError
from airflow_comfy.workflows.convert import find_cycle, ui_to_api
from airflow_comfy.workflows.load import (
    WorkflowFormat,
    WorkflowSource,
    detect_format,
    load_object_info,
    load_workflow,
    normalize_ids,
)
from airflow_comfy.workflows.overrides import (
    apply_overrides,
    apply_overrides_in_place,
    find_nodes,
    resolve_node,
)
from airflow_comfy.workflows.saved import (
    SHA256_XCOM_KEY,
    SavedWorkflow,
    is_saved_source,
    load_saved_workflow,
    resolve_source,
    saved_identity,
    saved_path,
    saved_record,
)


def prepare_workflow(
    source: WorkflowSource,
    *,
    object_info: Mapping[str, Any] | str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The API-format workflow to submit: loaded, converted if it is a web-UI save, overridden.

    ``object_info`` (a GET /object_info body, or a file holding one) is required for web-UI saves;
    when given, it also lets overrides reject input names the node class does not declare.
    """
    # A mapping is read, not copied: conversion builds a new dict and apply_overrides copies its result.
    workflow = source if isinstance(source, Mapping) else load_workflow(source)
    info = load_object_info(object_info) if object_info is not None else None
    if detect_format(workflow) == "ui":  # also rejects what is not a workflow
        if info is None:
            raise ComfyUIWorkflowError(
                "this workflow is a ComfyUI web UI save; converting it to the API format needs the "
                "server's object_info (fetched from the server, or a saved object_info.json)"
            )
        return apply_overrides_in_place(ui_to_api(workflow, info), overrides, object_info=info)  # all new
    return apply_overrides(normalize_ids(workflow), overrides, object_info=info)


__all__ = [
    "SHA256_XCOM_KEY",
    "SavedWorkflow",
    "WorkflowFormat",
    "WorkflowSource",
    "apply_overrides",
    "detect_format",
    "find_cycle",
    "find_nodes",
    "is_saved_source",
    "load_object_info",
    "load_saved_workflow",
    "load_workflow",
    "normalize_ids",
    "prepare_workflow",
    "resolve_node",
    "resolve_source",
    "saved_identity",
    "saved_path",
    "saved_record",
    "ui_to_api",
]

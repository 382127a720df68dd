"""Making a loaded workflow ready for one server: convert, override, upload inputs, validate.

The workflow is loaded once by the caller and passed in; the server's node catalogue comes from
the client's cache (:mod:`airflow_comfy.hooks.catalog`) and is only read, never copied.

Invariants: a workflow is reported invalid only after validation against a *freshly fetched*
catalogue (a cached one can only cause a refetch: a model file or custom node added to the server
must not make a valid workflow fail); validation errors read exactly like ComfyUI's own
(:func:`airflow_comfy.protocol.errors.validation_error`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_comfy.exceptions import ComfyUIValidationError, ComfyUIWorkflowError
from airflow_comfy.hooks import catalog
from airflow_comfy.protocol import errors
from airflow_comfy.protocol.validation import validate_prompt
from airflow_comfy.uploads import wire_inputs
from airflow_comfy.workflows import detect_format, prepare_workflow

if TYPE_CHECKING:
    from airflow_comfy.hooks.client import ComfyUIClient


def prepare_for(
    client: ComfyUIClient,
    workflow: Mapping[str, Any],
    overrides: Mapping[str, Any] | None,
    *,
    validate: bool,
    log: logging.Logger | Any,
    inputs: Mapping[str, Any] | None = None,
    input_subfolder: str = "airflow",
) -> dict[str, Any]:
    """The API-format workflow to submit to ``client``'s server (see the module docstring).

    ``inputs`` maps ``"<node>"`` or ``"<node>.<input>"`` to a local path or object-storage URI; each
    file is uploaded into ``input_subfolder`` and the server's name is wired into that input.
    """
    needs_info = validate or bool(inputs) or detect_format(workflow) == "ui"
    started = time.time()
    info = client.get_object_info() if needs_info else None
    try:
        return _prepare(client, workflow, overrides, info, validate, log, inputs, input_subfolder)
    except (ComfyUIValidationError, ComfyUIWorkflowError):
        fresh = catalog.fresh_object_info(client.transport, since=started) if info is not None else None
        if fresh is None:
            raise
    log.info(
        "The workflow does not fit the cached node catalogue of %s; checking a fresh one", client.base_url
    )
    return _prepare(client, workflow, overrides, fresh, validate, log, inputs, input_subfolder)


def _prepare(
    client: ComfyUIClient,
    workflow: Mapping[str, Any],
    overrides: Mapping[str, Any] | None,
    info: dict[str, Any] | None,
    validate: bool,
    log: logging.Logger | Any,
    inputs: Mapping[str, Any] | None,
    input_subfolder: str,
) -> dict[str, Any]:
    prepared = prepare_workflow(workflow, object_info=info, overrides=overrides)
    if inputs:
        prepared, uploads = wire_inputs(client, prepared, inputs, subfolder=input_subfolder, object_info=info)
        for target, answer in uploads.items():
            log.info("Uploaded input for %s as %s", target, answer)
    if validate and info is not None:
        result = validate_prompt(prepared, info)
        if result.error:
            raise errors.validation_error({"error": result.error, "node_errors": result.node_errors})
        if result.node_errors:
            log.warning(
                "Some outputs of the workflow are invalid and will be skipped by ComfyUI:\n%s",
                "\n".join(errors.node_error_lines(result.node_errors)),
            )
    return prepared

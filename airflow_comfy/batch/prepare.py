"""Making the workflow of a batch ready for each item, doing the expensive parts once.

Per server: the workflow is converted, given the batch-wide overrides and input files, and
validated once (:func:`airflow_comfy.prepare.prepare_for`); a rejection there is the batch's and
fails it before anything is submitted. Per item: its overrides are applied to a copy of that
prepared workflow and its input files wired in; the result is validated again only the first time
a set of overridden input names is seen on that server (so a wrong input *name* is caught before
submission, a wrong *value* by ComfyUI's own answer to the POST). Each distinct input file is
uploaded once per server.

Invariants: a problem of one item (an override naming no node, a missing input file, a value
ComfyUI rejects) is that item's error, never the batch's; nothing here talks to a server except
through the given clients; the prompt id of an item depends only on the task instance, the batch's
work and the item (:func:`item_prompt_id`), never on the server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_comfy.batch.items import BatchItem
from airflow_comfy.exceptions import ComfyUIValidationError, ComfyUIWorkflowError
from airflow_comfy.prepare import prepare_for
from airflow_comfy.protocol import errors
from airflow_comfy.protocol.ids import canonical_json, deterministic_prompt_id
from airflow_comfy.protocol.validation import validate_prompt
from airflow_comfy.uploads import wire_inputs
from airflow_comfy.workflows import apply_overrides

if TYPE_CHECKING:
    from airflow_comfy.hooks.client import ComfyUIClient


def batch_digest(identity: Mapping[str, Any]) -> str:
    """A digest of the batch's work (workflow, batch-wide overrides and inputs), computed once."""
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()


def item_prompt_id(task: tuple[Any, ...], batch: str, item: BatchItem) -> str:
    """The prompt id of ``item`` (``batch``: :func:`batch_digest`): the same on every try of the
    task, on whichever server."""
    work = {"batch": batch, "key": item.key, "overrides": dict(item.overrides), "inputs": dict(item.inputs)}
    return deterministic_prompt_id(*task, work)


class ItemPreparer:
    """The prepared workflow of each item, per server (see the module docstring)."""

    def __init__(
        self,
        source: Mapping[str, Any],
        overrides: Mapping[str, Any] | None,
        inputs: Mapping[str, str] | None,
        *,
        validate: bool,
        input_subfolder: str,
        log: Any,
    ) -> None:
        self.source, self.overrides, self.inputs = source, dict(overrides or {}), dict(inputs or {})
        self.validate, self.input_subfolder, self.log = validate, input_subfolder, log
        self._base: dict[str, dict[str, Any]] = {}
        self._checked: dict[str, set[frozenset[str]]] = {}
        self._uploads: dict[str, dict[str, dict[str, str]]] = {}

    def base(self, client: ComfyUIClient) -> dict[str, Any]:
        """The batch's workflow prepared for ``client``'s server; raises when ComfyUI would reject it."""
        url = client.base_url
        if url not in self._base:
            self._base[url] = prepare_for(
                client,
                self.source,
                self.overrides,
                validate=self.validate,
                log=self.log,
                inputs=self.inputs,
                input_subfolder=self.input_subfolder,
            )
        return self._base[url]

    def for_item(self, client: ComfyUIClient, item: BatchItem) -> dict[str, Any]:
        """``item``'s workflow for ``client``'s server; raises ``ComfyUIWorkflowError`` or
        ``ComfyUIValidationError`` for a problem of this item."""
        base = self.base(client)
        url = client.base_url
        info = client.get_object_info() if (self.validate or item.inputs) else None
        workflow = apply_overrides(base, item.overrides, object_info=info) if item.overrides else dict(base)
        if item.inputs:
            cache = self._uploads.setdefault(url, {})
            workflow, _answers = wire_inputs(
                client, workflow, item.inputs, subfolder=self.input_subfolder, object_info=info, cache=cache
            )
        names = frozenset(map(str, item.overrides)) | frozenset(item.inputs)
        seen = self._checked.setdefault(url, {frozenset()})
        if self.validate and info is not None and names not in seen:
            result = validate_prompt(workflow, info)
            if result.error:
                raise errors.validation_error({"error": result.error, "node_errors": result.node_errors})
            seen.add(names)
        return workflow


def blames_item(base: Mapping[str, Any], workflow: Mapping[str, Any], exc: ComfyUIValidationError) -> bool:
    """Whether ComfyUI's rejection of an item's workflow names an input the item changed (else the
    workflow itself does not fit that server, e.g. a model file it lacks)."""
    changed: set[tuple[str, str | None]] = set()
    for node_id, node in workflow.items():
        inputs = node.get("inputs") or {}
        before = (base.get(node_id) or {}).get("inputs") or {}
        changed.update((node_id, name) for name, value in inputs.items() if before.get(name) != value)
    changed.update((node_id, None) for node_id, _name in list(changed))
    for node_id, found in exc.node_errors.items():
        for error in (found or {}).get("errors") or [{}]:
            name = ((error or {}).get("extra_info") or {}).get("input_name")
            if (str(node_id), name if isinstance(name, str) else None) in changed:
                return True
    return False


def item_problem(exc: BaseException) -> str | None:
    """The message when ``exc`` is a problem of one item (not of the batch or the server)."""
    if isinstance(exc, ComfyUIValidationError | ComfyUIWorkflowError):
        return str(exc)
    return None

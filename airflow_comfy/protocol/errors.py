"""Turning ComfyUI's error answers into messages a person can act on, and into exceptions.

Formats (ComfyUI 0.3.64):
- POST /prompt 400: ``{"error": {type, message, details, extra_info}, "node_errors": {id: {"errors":
  [{type, message, details, extra_info: {input_name?}}], "class_type", "dependent_outputs"}}}``.
  ``error.details`` only covers the output node itself, so every ``node_errors`` entry is listed.
- ``execution_error``: ``{prompt_id, node_id, node_type, executed, exception_message,
  exception_type, traceback, current_inputs, current_outputs}``.
- ``execution_interrupted``: ``{prompt_id, node_id, node_type, executed}``.

Invariant: one line per node problem, always of the form
``node <id> (<class_type>): <input>: <message> — <details>`` (input and details omitted when
ComfyUI gives none), so the server's rejections and the local pre-submit validation read alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_comfy.exceptions import (
    ComfyUIError,
    ComfyUIExecutionError,
    ComfyUIInterruptedError,
    ComfyUIValidationError,
)
from airflow_comfy.protocol.states import PromptState, PromptStatus

TRACEBACK_TAIL = 3


def node_error_lines(node_errors: Mapping[str, Any]) -> list[str]:
    """One line per error of every node, sorted by node id (numeric ids numerically)."""
    lines: list[str] = []
    for node_id in sorted(node_errors, key=_node_sort_key):
        entry = node_errors[node_id] or {}
        class_type = entry.get("class_type") or "?"
        for err in entry.get("errors") or []:
            extra = err.get("extra_info") or {}
            input_name = extra.get("input_name")
            text = f"node {node_id} ({class_type}): "
            if input_name:
                text += f"{input_name}: "
            text += str(err.get("message") or err.get("type") or "invalid")
            details = err.get("details")
            if details:
                text += f" — {details}"
            lines.append(text)
    return lines


def format_validation_error(body: Mapping[str, Any]) -> str:
    """The message of a rejected prompt: the top-level error, then every node's problems."""
    error = body.get("error") if isinstance(body.get("error"), Mapping) else {}
    if isinstance(body.get("error"), str):
        error = {"message": body["error"]}
    head = str(error.get("message") or "ComfyUI rejected the workflow")
    if error.get("type"):
        head += f" [{error['type']}]"
    lines = node_error_lines(body.get("node_errors") or {})
    details = error.get("details")
    if details and not lines:
        head += f": {details}"
    return "\n".join([head, *(f"  - {line}" for line in lines)])


def validation_error(body: Mapping[str, Any]) -> ComfyUIValidationError:
    """The exception for a 400 body of POST /prompt (or an equivalent local result)."""
    error = body.get("error")
    if not isinstance(error, Mapping):
        error = {"type": "unknown", "message": str(error or ""), "details": "", "extra_info": {}}
    return ComfyUIValidationError(
        format_validation_error(body), error=dict(error), node_errors=dict(body.get("node_errors") or {})
    )


def format_execution_error(prompt_id: str, failure: Mapping[str, Any]) -> str:
    """``Prompt X failed in node 2 (ImageBlur): RuntimeError: ...`` plus the traceback tail."""
    where = _where(failure)
    exc_type = failure.get("exception_type") or "Error"
    message = str(failure.get("exception_message") or "").strip()
    text = f"ComfyUI prompt {prompt_id} failed{where}: {exc_type}: {message}".rstrip(": ")
    tail = [str(line).rstrip() for line in (failure.get("traceback") or [])][-TRACEBACK_TAIL:]
    if tail:
        text += "\nTraceback (last frames on the server):\n" + "\n".join(tail)
    return text


def format_interrupted(prompt_id: str, failure: Mapping[str, Any]) -> str:
    executed = failure.get("executed") or []
    return (
        f"ComfyUI prompt {prompt_id} was interrupted{_where(failure)} after {len(executed)} node(s) ran. "
        "ComfyUI does not record who interrupted it (a user in the web UI, another client, or a cancel)."
    )


def error_for_status(status: PromptStatus) -> ComfyUIError | None:
    """The exception for a failed terminal status, ``None`` for success or non-terminal states."""
    failure = dict(status.failure or {})
    if status.state is PromptState.ERROR:
        return ComfyUIExecutionError(
            format_execution_error(status.prompt_id, failure), prompt_id=status.prompt_id, details=failure
        )
    if status.state is PromptState.INTERRUPTED:
        return ComfyUIInterruptedError(
            format_interrupted(status.prompt_id, failure), prompt_id=status.prompt_id, details=failure
        )
    return None


def _where(failure: Mapping[str, Any]) -> str:
    node_id, node_type = failure.get("node_id"), failure.get("node_type")
    if node_id is None:
        return ""
    return f" in node {node_id} ({node_type or '?'})"


def _node_sort_key(node_id: str) -> tuple[int, int, str]:
    return (0, int(node_id), "") if str(node_id).isdigit() else (1, 0, str(node_id))

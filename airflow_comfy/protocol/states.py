"""Prompt states, read from ComfyUI's /history and /queue answers.

What the real server (0.3.64) does, and this module encodes:
- ``GET /history/<id>`` answers ``{}`` while the prompt is pending or running, for unknown ids,
  for prompts deleted from the queue and after a restart. Only a finished prompt has an entry.
- A finished entry has ``status.status_str`` ``success`` or ``error``; an interrupted run is also
  ``error`` and only its last message (``execution_interrupted``) tells it from a failure.
- ``GET /queue`` lists ``queue_running`` and ``queue_pending`` items ``[number, id, prompt, extra, outputs]``;
  pending is a heap, so the position is the rank of ``number`` (lower runs first; ``front`` is negative).

Invariant: :func:`resolve_status` never reports a terminal state unless the history says so, and
reports ``NOT_FOUND`` only when the prompt is in neither answer. Callers must read /queue *after*
/history (a prompt can finish in between) and treat ``NOT_FOUND`` as lost only after a grace period.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from airflow_comfy.protocol.outputs import OutputRef, refs_from_outputs, text_from_outputs


class PromptState(StrEnum):
    """Where a prompt is in its life on one server."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    ERROR = "error"
    INTERRUPTED = "interrupted"
    NOT_FOUND = "not_found"

    @property
    def is_terminal(self) -> bool:
        return self in (PromptState.SUCCESS, PromptState.ERROR, PromptState.INTERRUPTED)

    @property
    def is_active(self) -> bool:
        return self in (PromptState.PENDING, PromptState.RUNNING)


@dataclass(frozen=True)
class PromptStatus:
    """A snapshot of one prompt: its state and what is known with it."""

    prompt_id: str
    state: PromptState
    queue_position: int | None = None
    queue_size: int | None = None
    outputs: tuple[OutputRef, ...] = ()
    texts: Mapping[str, list[str]] = field(default_factory=dict)
    failure: Mapping[str, Any] | None = None
    messages: tuple[tuple[str, Mapping[str, Any]], ...] = ()

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal


def status_from_history_entry(prompt_id: str, entry: Mapping[str, Any]) -> PromptStatus:
    """Classify one history entry (the value under the prompt id)."""
    status = entry.get("status") or {}
    raw_messages = status.get("messages") or []
    messages = tuple(
        (str(m[0]), m[1] if isinstance(m[1], Mapping) else {})
        for m in raw_messages
        if isinstance(m, list | tuple) and len(m) == 2
    )
    failure: Mapping[str, Any] | None = None
    state = PromptState.SUCCESS
    for name, data in messages:
        if name == "execution_error":
            state, failure = PromptState.ERROR, data
        elif name == "execution_interrupted":
            state, failure = PromptState.INTERRUPTED, data
    if failure is None and status.get("status_str") == "error":
        state = PromptState.ERROR
        failure = {"exception_message": "ComfyUI reported status 'error' without an error message"}
    outputs = entry.get("outputs") or {}
    return PromptStatus(
        prompt_id=prompt_id,
        state=state,
        outputs=tuple(refs_from_outputs(outputs)),
        texts=text_from_outputs(outputs),
        failure=failure,
        messages=messages,
    )


def status_from_history(prompt_id: str, body: Any) -> PromptStatus | None:
    """The terminal status from a ``/history/<id>`` body, or ``None`` when the prompt has no entry."""
    if not isinstance(body, Mapping):
        return None
    entry = body.get(prompt_id)
    if not isinstance(entry, Mapping):
        return None
    return status_from_history_entry(prompt_id, entry)


def status_from_queue(prompt_id: str, body: Any) -> PromptStatus | None:
    """``RUNNING`` or ``PENDING`` (with a 0-based position) from a ``/queue`` body, else ``None``."""
    return queue_statuses(body, {prompt_id}).get(prompt_id)


def queue_statuses(queue_body: Any, prompt_ids: set[str]) -> dict[str, PromptStatus]:
    """``RUNNING``/``PENDING`` statuses of ``prompt_ids`` found in one /queue body, read once.

    Same facts as :func:`airflow_comfy.protocol.states.status_from_queue` (running wins, a pending
    prompt's position is its rank in run order), without re-sorting the queue for every prompt.
    """
    running, pending = queue_ids(queue_body)
    size = len(pending)
    found: dict[str, PromptStatus] = {}
    for position, prompt_id in enumerate(pending):
        if prompt_id in prompt_ids and prompt_id not in found:
            found[prompt_id] = PromptStatus(
                prompt_id, PromptState.PENDING, queue_position=position, queue_size=size
            )
    for prompt_id in running:
        if prompt_id in prompt_ids:
            found[prompt_id] = PromptStatus(prompt_id, PromptState.RUNNING, queue_size=size)
    return found


def resolve_status(prompt_id: str, history_body: Any, queue_body: Any) -> PromptStatus:
    """Combine a /history answer and a later /queue answer into one status."""
    return (
        status_from_history(prompt_id, history_body)
        or status_from_queue(prompt_id, queue_body)
        or PromptStatus(prompt_id, PromptState.NOT_FOUND)
    )


def queue_remaining(body: Any) -> int:
    """Running plus pending prompts, from a ``GET /prompt`` body ``{"exec_info": {"queue_remaining": N}}``."""
    info = body.get("exec_info") if isinstance(body, Mapping) else None
    value = info.get("queue_remaining") if isinstance(info, Mapping) else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"GET /prompt answered without exec_info.queue_remaining: {str(body)[:120]}")
    return value


def queue_ids(body: Any) -> tuple[list[str], list[str]]:
    """(running ids, pending ids in run order) from a /queue body."""
    if not isinstance(body, Mapping):
        return [], []
    running = [i for i in (_item_id(x) for x in body.get("queue_running") or []) if i]
    pending = [
        i for i in (_item_id(x) for x in sorted(body.get("queue_pending") or [], key=_item_number)) if i
    ]
    return running, pending


def _item_id(item: Any) -> str | None:
    if isinstance(item, list | tuple) and len(item) > 1 and isinstance(item[1], str):
        return item[1]
    return None


def _item_number(item: Any) -> float:
    if isinstance(item, list | tuple) and item and isinstance(item[0], int | float):
        return float(item[0])
    return float("inf")

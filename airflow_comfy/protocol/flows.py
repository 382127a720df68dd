"""Multi-request conversations with ComfyUI, written once as generators (no I/O).

A flow yields :class:`Call` (send this request, send me back its :class:`Answer`, or throw the
``ComfyUIError`` it failed with into me), :class:`Pause` (sleep) and :class:`Note` (log a line), and
returns its result. The sync transport (``hooks.transport.Transport.run``) and the async client
(``hooks.async_client.AsyncComfyUIClient.run``) each drive flows with a runner of a few lines, so
a status read, a cancel and a duplicate-free submission mean the same thing in a worker and in
the triggerer. (The idea is httpx's ``auth_flow``.)

Facts about ComfyUI these flows rely on:

- ``PromptQueue.task_done`` removes a prompt from the running list and writes its history entry
  under one lock, and ``POST /prompt`` has queued a prompt before it answers. So reading ``/queue``
  *first* and ``/history/<id>`` only when the prompt is not in it gives the whole truth in at most
  two requests: absent from both means the server does not know the prompt (restart, cleared).
- A caching proxy may keep answering a stale ``{}`` for ``/history/<id>``, so an absence is
  confirmed before it is reported: the entry again with a cache-busting query (ComfyUI ignores
  unknown query parameters) and the newest :data:`CONFIRM_HISTORY_ITEMS` entries of the full
  ``/history`` listing (:func:`read_statuses`). Only when both agree is a prompt ``NOT_FOUND``;
  a failed confirmation is that prompt's error (a transient fault to the waiting policy, never
  "lost").
- After the WebSocket end marker (``executing`` with ``node: null``) the history entry exists:
  one ``/history/<id>`` read is enough (:func:`read_final_status`).
- ``POST /api/jobs/<id>/cancel`` exists from ComfyUI 0.4 (probe ``GET /api/jobs``); without it a
  pending prompt is deleted from the queue and a running one interrupted *by id* — never a global
  interrupt (:func:`cancel_prompt`).
- ComfyUI does not de-duplicate ``prompt_id``: a resent ``POST /prompt`` runs the prompt twice. A
  failure that may have reached the server (timeout, reset, 500, 504) is resent only after the
  queue and history say it did not arrive (:func:`submit_prompt`).
"""

from __future__ import annotations

import uuid
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from airflow_comfy.exceptions import ComfyUIError, ComfyUIHTTPError, ComfyUIResponseError
from airflow_comfy.protocol import errors, urls
from airflow_comfy.protocol.states import (
    PromptState,
    PromptStatus,
    queue_statuses,
    status_from_history,
)

T = TypeVar("T")

#: Headers of every status read: a caching proxy must not answer a stale ``{}``.
FRESH = {"Cache-Control": "no-cache"}
#: How often a POST /prompt that may have arrived is looked for, and the pause between looks.
SUBMIT_LOOKS = 2
SUBMIT_LOOK_PAUSE = 2.0
#: How many of the newest entries of the full /history listing confirm that a prompt is absent.
CONFIRM_HISTORY_ITEMS = 64
#: How many times a POST /prompt that may have arrived (and was not found) is sent again.
MAX_RESENDS = 1


@dataclass(frozen=True)
class Call:
    """One request of a flow.

    ``retry``: the runner retries transient failures (policy: ``hooks.retry``); ``False`` sends
    once. ``resend_safe_only``: retry only failures that cannot have reached the server (refused
    connections, 429, 502, 503). ``expect``: ``"object"`` (a JSON object), ``"json"`` (any JSON or
    an empty body), or ``"none"`` (the body is not read). A status in ``allow_status`` is answered
    instead of raised.
    """

    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    retry: bool = True
    resend_safe_only: bool = False
    expect: str = "object"
    allow_status: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any


@dataclass(frozen=True)
class Fanout:
    """Several independent calls at once; answered with a list of :class:`Answer` or ``ComfyUIError``
    in the same order (the async runner sends them concurrently, the sync one in turn)."""

    calls: tuple[Call, ...]


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class Note:
    """A line for the log (``level`` is ``info`` or ``warning``)."""

    message: str
    level: str = "info"


Step = Call | Fanout | Pause | Note
Flow = Generator[Step, Any, T]


# --- reading a status ------------------------------------------------------------------------------


def read_status(prompt_id: str, *, retry: bool = True) -> Flow[PromptStatus]:
    """Queue first, then the history only when the prompt is not in the queue (module docstring)."""
    result = (yield from read_statuses([prompt_id], retry=retry))[prompt_id]
    if isinstance(result, ComfyUIError):
        raise result
    return result


def read_statuses(
    prompt_ids: Iterable[str], *, retry: bool = True, nonce: str | None = None
) -> Flow[dict[str, PromptStatus | ComfyUIError]]:
    """The status of each prompt: one /queue read for all, then /history/<id> for those not in it,
    then, for those in neither, the confirmation of their absence (module docstring).

    A failed queue read raises; a failed history read or confirmation is that prompt's result (the
    others stand). ``nonce`` is the cache-busting value (random when not given).
    """
    wanted = sorted(set(prompt_ids))
    queue: Answer = yield Call("GET", urls.QUEUE, headers=FRESH, retry=retry)
    found: dict[str, PromptStatus | ComfyUIError] = dict(queue_statuses(queue.body, set(wanted)))
    rest = [prompt_id for prompt_id in wanted if prompt_id not in found]
    if rest:
        calls = tuple(Call("GET", urls.history_path(p), headers=FRESH, retry=retry) for p in rest)
        answers = yield Fanout(calls)
        for prompt_id, answer in zip(rest, answers, strict=True):
            if isinstance(answer, ComfyUIError):
                found[prompt_id] = answer
            else:
                found[prompt_id] = status_from_history(prompt_id, answer.body) or PromptStatus(
                    prompt_id, PromptState.NOT_FOUND
                )
    absent = [
        p for p in rest if isinstance(found[p], PromptStatus) and found[p].state is PromptState.NOT_FOUND
    ]
    if absent:
        found.update((yield from confirm_absent(absent, retry=retry, nonce=nonce)))
    return found


def confirm_absent(
    prompt_ids: list[str], *, retry: bool = True, nonce: str | None = None
) -> Flow[dict[str, PromptStatus | ComfyUIError]]:
    """Ask again, past any cache, whether these prompts have a history entry (module docstring)."""
    bust = {"nocache": nonce or uuid.uuid4().hex}
    listing = Call(
        "GET", urls.HISTORY, params={"max_items": CONFIRM_HISTORY_ITEMS, **bust}, headers=FRESH, retry=retry
    )
    entries = tuple(
        Call("GET", urls.history_path(p), params=bust, headers=FRESH, retry=retry) for p in prompt_ids
    )
    full, *answers = yield Fanout((listing, *entries))
    result: dict[str, PromptStatus | ComfyUIError] = {}
    for prompt_id, answer in zip(prompt_ids, answers, strict=True):
        seen = [a for a in (full, answer) if not isinstance(a, ComfyUIError)]
        status = next(
            (s for s in (status_from_history(prompt_id, a.body) for a in seen) if s is not None), None
        )
        if status is not None:
            result[prompt_id] = status
        elif len(seen) < 2:  # one of the two could not be read: not confirmed, a transient fault
            failed = next(a for a in (full, answer) if isinstance(a, ComfyUIError))
            result[prompt_id] = (
                failed
                if errors.is_retryable(failed)
                else ComfyUIResponseError(f"Could not confirm that prompt {prompt_id} is gone: {failed}")
            )
        else:
            result[prompt_id] = PromptStatus(prompt_id, PromptState.NOT_FOUND)
    return result


def read_final_status(prompt_id: str) -> Flow[PromptStatus]:
    """After the WebSocket end marker: the history entry, else (never expected) a full read."""
    history: Answer = yield Call("GET", urls.history_path(prompt_id), headers=FRESH)
    found = status_from_history(prompt_id, history.body)
    if found is not None:
        return found
    return (yield from read_status(prompt_id))


# --- cancelling -----------------------------------------------------------------------------------


def probe_jobs_api() -> Flow[bool]:
    """Whether the server has ComfyUI 0.4's ``/api/jobs``."""
    try:
        yield Call("GET", urls.JOBS, params={"limit": 1}, expect="none")
    except ComfyUIHTTPError as exc:
        if exc.status_code in (404, 405):
            return False
        raise
    return True


def cancel_prompt(prompt_id: str, *, jobs_api: bool) -> Flow[str]:
    """Stop exactly this prompt wherever it is; returns what was done, for the log."""
    if jobs_api:
        try:
            yield Call("POST", urls.job_path(prompt_id, "cancel"), expect="none")
            return "cancelled through /api/jobs"
        except ComfyUIHTTPError as exc:
            if exc.status_code not in (404, 405):
                raise  # 404/405: no cancel route (or no such job there): use the queue and interrupt
    status = yield from read_status(prompt_id)
    if status.state is PromptState.PENDING:
        yield Call("POST", urls.QUEUE, json={"delete": [prompt_id]}, expect="none")
        # It may have started between the two calls: interrupting by id is harmless otherwise.
        if (yield from read_status(prompt_id)).state is PromptState.RUNNING:
            yield Call("POST", urls.INTERRUPT, json={"prompt_id": prompt_id}, expect="none")
            return "interrupted (it started while being removed from the queue)"
        return "removed from the queue"
    if status.state is PromptState.RUNNING:
        yield Call("POST", urls.INTERRUPT, json={"prompt_id": prompt_id}, expect="none")
        return "interrupted"
    return f"nothing to do (it is {status.state.value})"


# --- submitting -----------------------------------------------------------------------------------


def submit_prompt(body: Mapping[str, Any]) -> Flow[dict[str, Any]]:
    """POST /prompt once, never twice for one prompt id (module docstring).

    Returns ComfyUI's answer (``prompt_id``, ``number``, ``node_errors``), or ``{"prompt_id",
    "number": None, "node_errors": {}, "already_submitted": True}`` when an earlier attempt had
    arrived. A 400 raises :class:`ComfyUIValidationError` naming every node's problem.
    """
    prompt_id = str(body["prompt_id"])
    resends = 0
    while True:
        try:
            answer: Answer = yield Call(
                "POST",
                urls.PROMPT,
                json=dict(body),
                resend_safe_only=True,
                expect="json",
                allow_status=frozenset({400}),
            )
        except ComfyUIError as exc:
            if exc.never_sent or not errors.is_retryable(exc) or resends >= MAX_RESENDS:
                raise
            yield Note(
                f"POST /prompt for prompt {prompt_id} failed ({exc}); not resending blindly: it may have "
                "reached ComfyUI, checking its queue and history first",
                "warning",
            )
            if (yield from _arrived(prompt_id, exc)):
                yield Note(
                    f"Prompt {prompt_id} reached ComfyUI on the earlier attempt; not submitting it again"
                )
                return {"prompt_id": prompt_id, "number": None, "node_errors": {}, "already_submitted": True}
            resends += 1
            yield Note(f"Prompt {prompt_id} did not reach ComfyUI; sending it once more", "warning")
            continue
        if answer.status == 400:
            raise errors.validation_error(
                answer.body if isinstance(answer.body, Mapping) else {"error": str(answer.body)}
            )
        if not isinstance(answer.body, Mapping) or not isinstance(answer.body.get("prompt_id"), str):
            raise ComfyUIResponseError(f"POST /prompt answered without a prompt_id: {str(answer.body)[:200]}")
        return dict(answer.body)


def _arrived(prompt_id: str, failure: ComfyUIError) -> Flow[bool]:
    """Whether a POST that failed with ``failure`` reached the server; raise ``failure`` when unsure."""
    for look in range(SUBMIT_LOOKS):
        if look:
            yield Pause(SUBMIT_LOOK_PAUSE)  # a POST that timed out may still be in ComfyUI's validation
        try:
            status = yield from read_status(prompt_id, retry=False)
        except ComfyUIError:
            yield Note(
                f"Cannot tell whether prompt {prompt_id} reached ComfyUI; failing rather than risk a second "
                "job (the task's next try re-attaches to it if it did arrive)",
                "warning",
            )
            raise failure from None
        if status.state is not PromptState.NOT_FOUND:
            return True
    return False

"""The waiting policy: when a wait for one prompt ends, how, and with which message.

A pure state machine in the manner of h11's ``_state.py``: no I/O and no clock of its own. Whoever
waits (the blocking waiter, the deferred trigger, the sensor) reads a status by any means, feeds
what it learned to a :class:`PromptWait` together with the time on its own clock, and acts on the
returned :class:`Decision`. Every rule about a prompt's wait lives here and nowhere else.

Rules, applied to every input in this order:

1. **Deadline.** At or after ``deadline`` the wait ends ``TIMED_OUT``, whatever was fed.
2. **Outcome.** A terminal status (success, error, interrupted) ends the wait ``DONE``.
3. **Errors.** A transient error — what :func:`airflow_comfy.protocol.errors.is_retryable` retries,
   and also an answer that is not what ComfyUI sends (a proxy's error page, a truncated or empty
   body: :class:`ComfyUIResponseError`) — starts the *unreachable* clock at the first failure;
   once failures alone have been seen for longer than ``unreachable_grace`` the wait ends
   ``UNREACHABLE``. Any answer stops that clock. Any other error (401, 403, 404...) ends the
   wait ``FAILED`` at once.
4. **Lost.** ``NOT_FOUND`` (in neither queue nor history, an absence the read confirmed past any
   cache: :func:`airflow_comfy.protocol.flows.read_statuses`; an unconfirmed one arrives as an
   error, rule 3) starts the *lost* clock at the moment of
   that answer (not when the read began, which may have spent long retrying); when every answer
   for ``lost_grace`` seconds said ``NOT_FOUND`` the wait ends ``LOST``. A pending or running
   status stops that clock. A prompt whose end was seen on the WebSocket is never called lost.
5. **Progress.** A ``CONTINUE`` decision carries a line to log when the state or the queue
   position changed, or ``log_interval`` passed since the last line; otherwise ``log`` is empty.

Before the wait, :class:`StartOutage` is the rule of the start (locating and submitting): nothing
is at risk before ``POST /prompt``, so a transient failure there — or a POST that surely never
arrived (``never_sent``) — is tried again until failures alone have lasted ``unreachable_grace``;
a POST that may have arrived is never tried again here (that is
:func:`airflow_comfy.protocol.flows.submit_prompt`'s rule), nor is any other error.

:class:`WaitOutcome` is how an ended wait travels: the blocking waiter raises or returns it
(:meth:`WaitOutcome.result`), the trigger sends it as its event payload
(:meth:`WaitOutcome.to_payload`) and the operator reads it back (:meth:`WaitOutcome.from_payload`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from airflow_comfy.exceptions import (
    ComfyUIError,
    ComfyUIPromptLostError,
    ComfyUIResponseError,
    ComfyUITimeoutError,
)
from airflow_comfy.protocol import errors
from airflow_comfy.protocol.outputs import OutputRef
from airflow_comfy.protocol.states import PromptState, PromptStatus

#: What the lost message advises when the waiter itself submitted the prompt.
RESUBMIT_HINT = "run the task again (or set resubmit_if_lost=True) to submit it again."


class Verdict(StrEnum):
    """How a wait goes on, or how it ended."""

    CONTINUE = "continue"
    DONE = "done"
    LOST = "lost"
    TIMED_OUT = "timeout"
    UNREACHABLE = "unreachable"
    FAILED = "failed"


@dataclass(frozen=True)
class WaitRules:
    """The bounds of one wait, in seconds. ``timeout`` is only used in messages (may be unknown)."""

    timeout: float | None = None
    lost_grace: float = 30.0
    unreachable_grace: float = 300.0
    log_interval: float = 30.0


@dataclass(frozen=True)
class WaitOutcome:
    """An ended wait: the final status (``DONE``) or why there is none."""

    verdict: Verdict
    prompt_id: str
    server: str = ""
    status: PromptStatus | None = None
    message: str = ""
    #: The error that ended an UNREACHABLE or FAILED wait (not part of the payload).
    cause: BaseException | None = field(default=None, compare=False, repr=False)

    def error(self) -> BaseException | None:
        """The exception this outcome stands for; ``None`` for a prompt that succeeded.

        An unreachable or failed wait raises an error of the class of its cause (e.g.
        ``ComfyUIConnectionError``) with the outcome's message.
        """
        if self.verdict is Verdict.DONE and self.status is not None:
            return errors.error_for_status(self.status)
        if self.verdict is Verdict.LOST:
            return ComfyUIPromptLostError(self.message, prompt_id=self.prompt_id)
        if self.verdict is Verdict.TIMED_OUT:
            return ComfyUITimeoutError(self.message)
        if self.cause is not None:  # same class and attributes as the cause, the outcome's message
            cls = type(self.cause)
            error = cls.__new__(cls)
            error.__dict__.update(vars(self.cause))
            error.args = (self.message,)
            return error
        return ComfyUIError(self.message)

    def result(self) -> PromptStatus:
        """The successful status, or raise the error of any other outcome."""
        failure = self.error()
        if failure is not None:
            raise failure
        if self.status is None:
            raise ComfyUIError(self.message)
        return self.status

    def to_payload(self) -> dict[str, Any]:
        """JSON-safe event payload (the trigger's ``TriggerEvent``); read back by :meth:`from_payload`."""
        payload: dict[str, Any] = {"prompt_id": self.prompt_id, "base_url": self.server}
        if self.verdict is Verdict.DONE and self.status is not None:
            payload.update(
                status=self.status.state.value,
                outputs=[ref.to_dict() for ref in self.status.outputs],
                texts=dict(self.status.texts),
                failure=dict(self.status.failure) if self.status.failure else None,
            )
            return payload
        # UNREACHABLE travels as "failed": the event vocabulary of earlier versions stays valid.
        kind = "failed" if self.verdict is Verdict.UNREACHABLE else self.verdict.value
        payload.update(status=kind, message=self.message)
        return payload

    @classmethod
    def from_payload(cls, payload: Any) -> WaitOutcome:
        """Validate a trigger event (this version's or an earlier one's) into an outcome."""
        if not isinstance(payload, Mapping) or not isinstance(payload.get("prompt_id"), str):
            raise ComfyUIResponseError(
                f"The ComfyUI trigger sent an event without a prompt id: {payload!r:.200}"
            )
        prompt_id, server = payload["prompt_id"], str(payload.get("base_url") or "")
        kind = payload.get("status")
        if kind in ("lost", "timeout", "failed"):
            return cls(Verdict(kind), prompt_id, server, message=str(payload.get("message")))
        try:
            state = PromptState(kind)
        except ValueError:
            raise ComfyUIResponseError(f"The ComfyUI trigger sent an unknown status {kind!r}") from None
        if not state.is_terminal:
            raise ComfyUIResponseError(f"The ComfyUI trigger fired while prompt {prompt_id} was {kind}")
        refs = tuple(
            OutputRef(
                **{k: str(item.get(k) or "") for k in ("node_id", "kind", "filename", "subfolder", "type")}
            )
            for item in payload.get("outputs") or []
            if isinstance(item, Mapping)
        )
        failure = payload.get("failure")
        status = PromptStatus(
            prompt_id,
            state,
            outputs=refs,
            texts=dict(payload.get("texts") or {}),
            failure=failure if isinstance(failure, Mapping) else None,
        )
        return cls(Verdict.DONE, prompt_id, server, status=status)


@dataclass(frozen=True)
class Decision:
    """What to do after one input: go on (``outcome`` is ``None``) or stop with ``outcome``."""

    verdict: Verdict
    outcome: WaitOutcome | None = None
    log: str = ""
    warning: str = ""


@dataclass
class PromptWait:
    """The state of one wait; see the module docstring for the rules.

    :param deadline: when the wait ends ``TIMED_OUT``, on the same clock as every ``now`` fed.
    :param lost_hint: advice appended to the lost message (what the reader can do about it).
    """

    prompt_id: str
    server: str
    deadline: float
    rules: WaitRules = field(default_factory=WaitRules)
    lost_hint: str = RESUBMIT_HINT
    not_found_since: float | None = None
    unreachable_since: float | None = None
    end_seen: bool = False
    last_status: PromptStatus | None = None
    _last_line: str = ""
    _last_log_at: float | None = None

    # --- inputs -----------------------------------------------------------------------------------

    def status(self, now: float, status: PromptStatus) -> Decision:
        """A status read answered at ``now``."""
        if now >= self.deadline:
            return self._timed_out()
        self.unreachable_since = None
        self.last_status = status
        if status.is_terminal:
            return self._end(Verdict.DONE, status=status)
        if status.state is PromptState.NOT_FOUND and not self.end_seen:
            if self.not_found_since is None:
                self.not_found_since = now
            if now - self.not_found_since >= self.rules.lost_grace:
                lost = errors.prompt_lost_error(self.prompt_id, self.server, self.lost_hint)
                return self._end(Verdict.LOST, message=str(lost))
            return Decision(Verdict.CONTINUE, warning=self._not_found_line(now))
        self.not_found_since = None
        return Decision(Verdict.CONTINUE, log=self._progress(now, describe_status(status)))

    def error(self, now: float, exc: BaseException) -> Decision:
        """A status read that failed at ``now`` with ``exc``."""
        if now >= self.deadline:
            return self._timed_out()
        if not (errors.is_retryable(exc) or isinstance(exc, ComfyUIResponseError)):
            return self._end(Verdict.FAILED, message=str(exc), cause=exc)
        if self.unreachable_since is None:
            self.unreachable_since = now
        waited = now - self.unreachable_since
        if waited > self.rules.unreachable_grace:
            message = (
                f"{exc} (no usable answer for {waited:.0f} s, longer than the unreachable grace of "
                f"{self.rules.unreachable_grace:g} s)"
            )
            return self._end(Verdict.UNREACHABLE, message=message, cause=exc)
        until = self.rules.unreachable_grace - waited
        return Decision(
            Verdict.CONTINUE,
            warning=f"Could not read the status of prompt {self.prompt_id} "
            f"(still trying for {until:.0f} s): {exc}",
        )

    def progress(self, now: float, line: str) -> Decision:
        """Progress learned another way (WebSocket events): only the deadline and the log apply."""
        if now >= self.deadline:
            return self._timed_out()
        return Decision(Verdict.CONTINUE, log=self._progress(now, line))

    def saw_end(self) -> None:
        """The end of the prompt was seen (WebSocket end marker): it can no longer be lost."""
        self.end_seen = True
        self.not_found_since = None

    def tick(self, now: float) -> Decision:
        """Time passed without news."""
        return self._timed_out() if now >= self.deadline else Decision(Verdict.CONTINUE)

    # --- helpers ----------------------------------------------------------------------------------

    def _end(
        self,
        verdict: Verdict,
        *,
        status: PromptStatus | None = None,
        message: str = "",
        cause: BaseException | None = None,
    ) -> Decision:
        if cause is not None:  # keep the error, not the frames (and buffers) it was raised through
            cause = cause.with_traceback(None)
        outcome = WaitOutcome(
            verdict, self.prompt_id, self.server, status=status, message=message, cause=cause
        )
        return Decision(verdict, outcome)

    def _timed_out(self) -> Decision:
        return self._end(
            Verdict.TIMED_OUT,
            message=str(errors.wait_timeout_error(self.prompt_id, self.server, self.rules.timeout)),
        )

    def _not_found_line(self, now: float) -> str:
        since = 0.0 if self.not_found_since is None else now - self.not_found_since
        return (
            f"Prompt {self.prompt_id} is in neither the queue nor the history of {self.server} "
            f"(for {since:.0f} s; lost after {self.rules.lost_grace:g} s)"
        )

    def _progress(self, now: float, line: str) -> str:
        """``line`` when it is news or ``log_interval`` passed since the last line, else ``""``."""
        due = self._last_log_at is None or now - self._last_log_at >= self.rules.log_interval
        if line == self._last_line and not due:
            return ""
        self._last_line, self._last_log_at = line, now
        return line


@dataclass
class StartOutage:
    """The outage rule of the start of a run (module docstring): go on, or end with the error.

    ``failed`` is fed each failed attempt with the time on the caller's monotonic clock (``now``)
    and on the wall clock (``wall``, for the "still trying until" line) and whether ``POST /prompt``
    was already sent in that attempt.
    """

    server: str
    grace: float
    since: float | None = None

    def pause(self, now: float, longest: float) -> float:
        """How long to wait before the next attempt: ``longest``, or less when the grace ends sooner."""
        since = now if self.since is None else self.since
        return max(0.0, min(longest, since + self.grace - now))

    def failed(self, now: float, wall: float, exc: BaseException, *, posted: bool) -> Decision:
        if (posted and not getattr(exc, "never_sent", False)) or not errors.is_retryable(exc):
            return Decision(Verdict.FAILED, WaitOutcome(Verdict.FAILED, "", self.server, message=str(exc)))
        if self.since is None:
            self.since = now
        waited = now - self.since
        if waited >= self.grace:
            message = (
                f"ComfyUI {self.server} stayed unreachable for {waited:.0f} s, the unreachable grace of "
                f"{self.grace:g} s, before anything was submitted: {exc}"
            )
            outcome = WaitOutcome(
                Verdict.UNREACHABLE, "", self.server, message=message, cause=exc.with_traceback(None)
            )
            return Decision(Verdict.UNREACHABLE, outcome)
        until = time.strftime("%H:%M:%S UTC", time.gmtime(wall + self.grace - waited))
        return Decision(
            Verdict.CONTINUE,
            warning=f"ComfyUI unreachable for {waited:.0f} s, still trying until {until} "
            f"(unreachable_grace {self.grace:g} s): {exc}",
        )


def describe_status(status: PromptStatus) -> str:
    """One log line for a non-terminal status: ``pending, 2 of 5 in the queue`` or ``running``."""
    if status.state is PromptState.PENDING and status.queue_position is not None:
        ahead = status.queue_position
        return f"pending, position {ahead + 1} of {status.queue_size} in the queue ({ahead} ahead)"
    return status.state.value

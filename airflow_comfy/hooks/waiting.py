"""Blocking until one prompt ends, over the WebSocket with HTTP status reads as the safety net.

The rules of the wait (deadline, lost and unreachable graces, progress lines) are the pure policy
of :mod:`airflow_comfy.protocol.waiting`; this module only reads and feeds it:

- WebSocket mode: events are folded by :class:`~airflow_comfy.protocol.events.PromptTracker`; the
  end marker (``executing`` with ``node: null``) is followed by one ``/history/<id>`` read
  (:func:`~airflow_comfy.protocol.flows.read_final_status`), so a run costs two requests, the
  submission and that read. When the socket cannot open, drops, or stays silent for
  ``check_interval``, the status is read over HTTP, so no result is lost.
- Polling mode: a status read (:func:`~airflow_comfy.protocol.flows.read_status`) every
  ``check_interval``; the next read starts early by the last read's duration, so an end right
  after a read is seen at most ``check_interval`` later, request time included.

Invariant: every loop here ends by the deadline at the latest, and each iteration either sleeps,
blocks on the socket with a timeout, or returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from airflow_comfy.exceptions import ComfyUIConnectionError, ComfyUIError, ComfyUIInterruptedError
from airflow_comfy.protocol import flows
from airflow_comfy.protocol.events import PromptTracker, WsEvent
from airflow_comfy.protocol.states import PromptState, PromptStatus
from airflow_comfy.protocol.waiting import RESUBMIT_HINT, Decision, PromptWait, WaitOutcome, WaitRules

if TYPE_CHECKING:
    from airflow_comfy.hooks.transport import Transport
    from airflow_comfy.hooks.websocket import ComfyUIWebSocket

log = logging.getLogger(__name__)

WAIT_MODES = ("websocket", "polling")


class Server(Protocol):
    """What waiting needs of a client (:class:`~airflow_comfy.hooks.client.ComfyUIClient`)."""

    @property
    def base_url(self) -> str: ...

    @property
    def transport(self) -> Transport: ...

    def websocket(self, client_id: str) -> ComfyUIWebSocket: ...


#: Even while events flow, the status is read over HTTP at least every this many check intervals.
SAFETY_READ_EVERY = 10


class PromptWaiter:
    """Blocks until ``prompt_id`` ends on the client's server; see the module docstring.

    :param client_id: the client id the prompt was submitted with (needed for WebSocket events).
    :param websocket: an already open socket for ``client_id`` (open it *before* submitting to miss
        nothing); the waiter closes it.
    :param on_progress: called with each progress line (by default logged at INFO).
    :param should_stop: polled at least every ``check_interval``; when it returns true the wait ends
        with :class:`ComfyUIInterruptedError` (the task was killed and its prompt cancelled).
    :param raise_on_failure: raise the error of a prompt that ended in an error or was interrupted
        (otherwise return its status); lost, timed-out and unreachable waits always raise.
    """

    def __init__(
        self,
        client: Server,
        prompt_id: str,
        *,
        client_id: str | None = None,
        mode: str = "websocket",
        timeout: float = 3600.0,
        check_interval: float = 2.0,
        lost_grace: float = 30.0,
        unreachable_grace: float = 300.0,
        log_interval: float = 30.0,
        total_nodes: int | None = None,
        websocket: ComfyUIWebSocket | None = None,
        on_progress: Callable[[str], None] | None = None,
        raise_on_failure: bool = True,
        should_stop: Callable[[], bool] | None = None,
        lost_hint: str = RESUBMIT_HINT,
    ) -> None:
        if mode not in WAIT_MODES:
            raise ValueError(f"wait mode must be one of {WAIT_MODES}, got {mode!r}")
        if timeout <= 0 or check_interval <= 0:
            raise ValueError("timeout and check_interval must be positive")
        self.client = client
        self.prompt_id = prompt_id
        self.client_id = client_id
        self.mode = mode
        self.timeout = timeout
        self.check_interval = check_interval
        self.rules = WaitRules(timeout, lost_grace, unreachable_grace, log_interval)
        self.lost_hint = lost_hint
        self.tracker = PromptTracker(prompt_id, total_nodes=total_nodes)
        self.on_progress = on_progress or (lambda line: log.info("Prompt %s: %s", prompt_id, line))
        self.raise_on_failure = raise_on_failure
        self.should_stop = should_stop
        self.reads = 0  # HTTP status reads made (for tests and benchmarks)
        self._ws = websocket
        self._last_read = 0.0
        self._last_read_took = 0.0

    def wait(self) -> PromptStatus:
        start = time.monotonic()
        self._last_read = start
        state = PromptWait(
            self.prompt_id, self.client.base_url, start + self.timeout, self.rules, self.lost_hint
        )
        try:
            if self.mode == "polling" and self._ws is not None:
                self._ws.close()  # polling was asked for: a socket handed in is not used
                self._ws = None
            if self.mode == "websocket" and self.client_id and self._ws is None:
                self._ws = self._open_socket()
            outcome = self._loop(state)
        finally:
            if self._ws is not None:
                self._ws.close()
        if outcome.status is not None and not self.raise_on_failure:
            return outcome.status
        return outcome.result()

    # --- the loop -----------------------------------------------------------------------------------

    def _loop(self, state: PromptWait) -> WaitOutcome:
        while True:
            self._raise_if_stopped()
            decision = self._step(state)
            if decision.outcome is not None:
                status = decision.outcome.status
                if status is not None and status.state is PromptState.INTERRUPTED:
                    # The stop cancels the prompt: a read that lands after that cancel but before the
                    # next look at the stop signal sees "interrupted", which is the task's own doing.
                    self._raise_if_stopped()
                return decision.outcome
            if decision.warning:
                log.warning("%s", decision.warning)
            if decision.log:
                self.on_progress(decision.log)

    def _raise_if_stopped(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise ComfyUIInterruptedError(
                f"Stopped waiting for ComfyUI prompt {self.prompt_id} on {self.client.base_url}: "
                "the task was killed or stopped (its prompt is cancelled unless cancel_on_kill=False)",
                prompt_id=self.prompt_id,
                details={"stopped_by": "task"},
            )

    def _step(self, state: PromptWait) -> Decision:
        now = time.monotonic()
        remaining = state.deadline - now
        if remaining <= 0:
            return state.tick(now)
        if self._ws is None:
            next_read = self._last_read + self.check_interval - self._last_read_took
            if self.reads and next_read > now:
                time.sleep(min(next_read, state.deadline) - now)
                return state.tick(time.monotonic())
            return self._read(state, flows.read_status(self.prompt_id))
        try:
            event = self._ws.recv(min(self.check_interval, remaining))
        except ComfyUIConnectionError as exc:
            log.warning("%s; continuing by polling /queue and /history", exc)
            self._ws = None
            return state.tick(time.monotonic())
        if isinstance(event, WsEvent) and self.tracker.feed(event) and event.type != "status":
            if self.tracker.finished:
                state.saw_end()
                return self._read(state, flows.read_final_status(self.prompt_id))
            return state.progress(time.monotonic(), self.tracker.describe())
        if event is None or time.monotonic() - self._last_read >= SAFETY_READ_EVERY * self.check_interval:
            return self._read(state, flows.read_status(self.prompt_id))  # silence, or a long run of chatter
        return state.tick(time.monotonic())

    def _read(self, state: PromptWait, flow: flows.Flow[PromptStatus]) -> Decision:
        """One HTTP status read, fed to the policy with the time its answer arrived."""
        started = time.monotonic()
        self._last_read = started
        self.reads += 1
        try:
            status = self.client.transport.run(flow)
        except ComfyUIError as exc:
            return state.error(time.monotonic(), exc)
        answered = time.monotonic()
        self._last_read_took = min(answered - started, self.check_interval / 2)
        return state.status(answered, status)

    def _open_socket(self) -> ComfyUIWebSocket | None:
        assert self.client_id is not None
        socket = self.client.websocket(self.client_id)
        try:
            return socket.connect()
        except ComfyUIConnectionError as exc:
            log.warning("%s; waiting by polling instead", exc)
            return None

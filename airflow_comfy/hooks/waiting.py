"""Waiting for one prompt to end, over the WebSocket with polling as the safety net.

Rules (from the real server's behaviour, see :mod:`airflow_comfy.protocol.states` and ``.events``):
- WebSocket mode: the end is ``executing`` with ``node: null`` for this prompt; then /history is
  read for the outcome and outputs. ``execution_success`` alone is not the end (history is written
  after it). When the socket cannot open, drops, or stays silent for ``check_interval``, the waiter
  asks /history and /queue over HTTP, so no result is lost.
- Polling mode: /history, then /queue, every ``check_interval``. ``{}`` from /history is ambiguous
  (pending, running, unknown): the queue decides. A prompt found in neither for longer than
  ``lost_grace`` is lost (server restarted, history cleared) → :class:`ComfyUIPromptLostError`.
- Transient HTTP failures while waiting are tolerated for ``unreachable_grace`` seconds.

Invariant: every loop here ends by ``timeout`` at the latest (a monotonic deadline), and each
iteration either sleeps, blocks on the socket with a timeout, or returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from airflow_comfy.exceptions import (
    ComfyUIConnectionError,
    ComfyUIError,
    ComfyUIInterruptedError,
)
from airflow_comfy.protocol import errors
from airflow_comfy.protocol.events import PromptTracker, WsEvent
from airflow_comfy.protocol.states import PromptState, PromptStatus

if TYPE_CHECKING:
    from airflow_comfy.hooks.comfyui import ComfyUIHook
    from airflow_comfy.hooks.websocket import ComfyUIWebSocket

log = logging.getLogger(__name__)

WAIT_MODES = ("websocket", "polling")


class PromptWaiter:
    """Blocks until ``prompt_id`` ends on the hook's server; see the module docstring for the rules.

    :param client_id: the client id the prompt was submitted with (needed for WebSocket events).
    :param websocket: an already open socket for ``client_id`` (open it *before* submitting to miss
        nothing); the waiter closes it.
    :param on_progress: called with a one-line description at most every ``log_interval`` seconds.
    :param should_stop: polled once per iteration (at least every ``check_interval``); when it returns
        true the wait ends with :class:`ComfyUIInterruptedError` (e.g. the task was killed and its
        prompt cancelled), instead of waiting for the prompt to be reported lost.
    """

    def __init__(
        self,
        hook: ComfyUIHook,
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
    ) -> None:
        if mode not in WAIT_MODES:
            raise ValueError(f"wait mode must be one of {WAIT_MODES}, got {mode!r}")
        if timeout <= 0 or check_interval <= 0:
            raise ValueError("timeout and check_interval must be positive")
        self.hook = hook
        self.prompt_id = prompt_id
        self.client_id = client_id
        self.mode = mode
        self.timeout = timeout
        self.check_interval = check_interval
        self.lost_grace = lost_grace
        self.unreachable_grace = unreachable_grace
        self.log_interval = log_interval
        self.tracker = PromptTracker(prompt_id, total_nodes=total_nodes)
        self.on_progress = on_progress or (lambda line: log.info("Prompt %s: %s", prompt_id, line))
        self.raise_on_failure = raise_on_failure
        self.should_stop = should_stop
        self._ws = websocket
        self._not_found_since: float | None = None
        self._unreachable_since: float | None = None
        self._last_log = 0.0
        self._last_check = 0.0
        self._last_check_took = 0.0
        self._last_status: PromptStatus | None = None

    def wait(self) -> PromptStatus:
        deadline = time.monotonic() + self.timeout
        try:
            if self.mode == "polling" and self._ws is not None:
                self._ws.close()  # polling was asked for: a socket handed in is not used
                self._ws = None
            if self.mode == "websocket" and self.client_id and self._ws is None:
                self._ws = self._open_socket()
            status = self._loop(deadline)
        finally:
            if self._ws is not None:
                self._ws.close()
        if self.raise_on_failure:
            failure = errors.error_for_status(status)
            if failure is not None:
                raise failure
        return status

    # --- the loop ---------------------------------------------------------------------------------

    def _loop(self, deadline: float) -> PromptStatus:
        while (remaining := deadline - time.monotonic()) > 0:
            if self.should_stop is not None and self.should_stop():
                raise ComfyUIInterruptedError(
                    f"Stopped waiting for ComfyUI prompt {self.prompt_id} on {self.hook.base_url}: "
                    "the task was killed or stopped (its prompt is cancelled unless cancel_on_kill=False)",
                    prompt_id=self.prompt_id,
                    details={"stopped_by": "task"},
                )
            if self._ws is None:
                status = self._check()
                if status is not None and status.is_terminal:
                    return status
                # The next check starts early by the last check's duration, so that an end right
                # after a check is seen at most check_interval later, request time included.
                next_check = self._last_check + self.check_interval - self._last_check_took
                time.sleep(max(min(next_check, deadline) - time.monotonic(), 0))
                continue
            try:
                event = self._ws.recv(min(self.check_interval, remaining))
            except ComfyUIConnectionError as exc:
                log.warning("%s; continuing by polling /history and /queue", exc)
                self._ws = None
                continue
            if isinstance(event, WsEvent) and self.tracker.feed(event):
                if self.tracker.finished:
                    final = self._final_status(deadline)
                    if final is not None:
                        return final
                self._report_progress()
            if event is None or time.monotonic() - self._last_check >= 10 * self.check_interval:
                status = self._check()
                if status is not None and status.is_terminal:
                    return status
        raise errors.wait_timeout_error(self.prompt_id, self.hook.base_url, self.timeout)

    def _final_status(self, deadline: float) -> PromptStatus | None:
        """Read the history entry after the end marker (it is written just before the marker)."""
        for delay in (0, 0.05, 0.1, 0.2, 0.4, 0.8):
            if time.monotonic() + delay >= deadline:
                break
            time.sleep(delay)
            status = self._check()
            if status is not None and status.is_terminal:
                return status
        return None

    def _check(self) -> PromptStatus | None:
        """One HTTP status read, with the lost/unreachable rules applied."""
        now = time.monotonic()
        self._last_check = now
        try:
            status = self.hook.get_prompt_status(self.prompt_id)
            self._last_check_took = min(time.monotonic() - now, self.check_interval / 2)
        except ComfyUIError as exc:
            if not errors.is_retryable(exc):
                raise
            self._unreachable_since = self._unreachable_since or now
            if now - self._unreachable_since > self.unreachable_grace:
                raise
            log.warning("Could not read the status of prompt %s (will retry): %s", self.prompt_id, exc)
            return None
        self._unreachable_since = None
        self._last_status = status
        if status.state is PromptState.NOT_FOUND:
            self._not_found_since = self._not_found_since or now
            if now - self._not_found_since >= self.lost_grace:
                raise errors.prompt_lost_error(
                    self.prompt_id,
                    self.hook.base_url,
                    "run the task again (or set resubmit_if_lost=True) to submit it again.",
                )
            return status
        self._not_found_since = None
        if not status.is_terminal:
            self._report_progress(status)
        return status

    # --- progress ---------------------------------------------------------------------------------

    def _report_progress(self, status: PromptStatus | None = None) -> None:
        now = time.monotonic()
        if now - self._last_log < self.log_interval:
            return
        self._last_log = now
        if status is None and not self.tracker.started:
            status = self._last_status  # the socket tells nothing about the queue position: HTTP does
        if status is not None and status.state is PromptState.PENDING:
            position = (status.queue_position or 0) + 1
            line = f"pending, {position} of {status.queue_size} in the queue"
        elif status is not None and self._ws is None:
            line = status.state.value
        else:
            line = self.tracker.describe()
        self.on_progress(line)

    def _open_socket(self) -> ComfyUIWebSocket | None:
        assert self.client_id is not None
        socket = self.hook.websocket(self.client_id)
        try:
            return socket.connect()
        except ComfyUIConnectionError as exc:
            log.warning("%s; waiting by polling instead", exc)
            return None

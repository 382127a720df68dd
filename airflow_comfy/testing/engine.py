"""The stand-in's in-memory state: the prompt queue, the one worker thread, and the history.

Mirrors ComfyUI 0.3.64's ``PromptQueue`` and ``prompt_worker``: pending items are a heap of
``(number, prompt_id, prompt, extra_data, outputs_to_execute)`` (lower ``number`` first, ``front``
numbers are negative); the worker pops one, runs it, writes history, broadcasts ``status`` and only
then sends ``executing`` with ``node: null`` to the prompt's client.

Invariants: at most one prompt runs at a time; a history entry exists only for a finished prompt;
every wait is bounded (the worker wakes at least every ``_POLL`` seconds to notice a stop).
"""

from __future__ import annotations

import copy
import heapq
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from airflow_comfy.testing.executor import Emit, Executor, Shutdown
from airflow_comfy.testing.files import Folders
from airflow_comfy.testing.gates import Gates

MAXIMUM_HISTORY_SIZE = 10000
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
_POLL = 0.2
QueueItem = tuple[Any, str, dict[str, Any], dict[str, Any], list[str]]


class Engine:
    """Queue + worker + history of one server process (a restart makes a new one)."""

    def __init__(
        self,
        folders: Folders,
        emit: Emit,
        supports_metadata: Callable[[str | None], bool],
        node_delays: Mapping[str, float] | None = None,
        gates: Gates | None = None,
    ) -> None:
        self.emit = emit
        self.mutex = threading.RLock()
        self.not_empty = threading.Condition(self.mutex)
        self.queue: list[QueueItem] = []
        self.running: dict[int, QueueItem] = {}
        self.history: dict[str, dict[str, Any]] = {}
        self.flags: dict[str, Any] = {}
        self.task_counter = 0
        self.number = 0
        self._busy = False  # from dequeue until the final ``executing`` message was emitted
        self.interrupt = threading.Event()
        self.stop_event = threading.Event()
        self.held = threading.Event()  # set: queued prompts stay queued (nothing starts)
        self.executor = Executor(
            folders,
            emit,
            supports_metadata,
            self.interrupt,
            self.stop_event,
            dict(node_delays or {}),
            gates or Gates(),
        )
        self._thread = threading.Thread(target=self._work, name="comfy-standin-worker", daemon=True)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        with self.mutex:
            self.not_empty.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- queue (ComfyUI's PromptQueue) --------------------------------------------------------
    def queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.tasks_remaining()}}

    def queue_updated(self) -> None:
        self.emit("status", {"status": self.queue_info()}, None)

    def next_number(self, front: bool) -> int:
        with self.mutex:
            number = -self.number if front else self.number
            self.number += 1
            return number

    def put(self, item: QueueItem) -> None:
        with self.mutex:
            heapq.heappush(self.queue, item)
            self.queue_updated()
            self.not_empty.notify()

    def tasks_remaining(self) -> int:
        with self.mutex:
            return len(self.queue) + len(self.running)

    def current_queue(self) -> tuple[list[QueueItem], list[QueueItem]]:
        with self.mutex:
            return list(self.running.values()), list(self.queue)

    def running_ids(self) -> list[str]:
        with self.mutex:
            return [item[1] for item in self.running.values()]

    def wipe_queue(self) -> None:
        with self.mutex:
            self.queue = []
            self.queue_updated()

    def delete_queue_item(self, prompt_id: str) -> bool:
        with self.mutex:
            for index, item in enumerate(self.queue):
                if item[1] == prompt_id:
                    if len(self.queue) == 1:
                        self.wipe_queue()
                    else:
                        self.queue.pop(index)
                        heapq.heapify(self.queue)
                    self.queue_updated()
                    return True
        return False

    def set_flag(self, name: str, value: Any) -> None:
        with self.mutex:
            self.flags[name] = value
            self.not_empty.notify()

    def is_idle(self) -> bool:
        with self.mutex:
            return not self.queue and not self.running and not self._busy

    # -- history ------------------------------------------------------------------------------
    def get_history(
        self, prompt_id: str | None = None, max_items: int | None = None, offset: int = -1
    ) -> dict:
        with self.mutex:
            if prompt_id is not None:
                entry = self.history.get(prompt_id)
                return {} if entry is None else {prompt_id: copy.deepcopy(entry)}
            out: dict[str, Any] = {}
            if offset < 0 and max_items is not None:
                offset = len(self.history) - max_items
            for index, (key, entry) in enumerate(self.history.items()):
                if index >= offset:
                    out[key] = copy.deepcopy(entry)
                    if max_items is not None and len(out) >= max_items:
                        break
            return out

    def wipe_history(self) -> None:
        with self.mutex:
            self.history = {}

    def delete_history_item(self, prompt_id: str) -> None:
        with self.mutex:
            self.history.pop(prompt_id, None)

    # -- worker -------------------------------------------------------------------------------
    def _get(self) -> tuple[QueueItem, int] | None:
        with self.not_empty:
            if not self.queue or self.held.is_set():
                self.not_empty.wait(_POLL)
            if not self.queue or self.held.is_set() or self.stop_event.is_set():
                return None
            item = heapq.heappop(self.queue)
            self._busy = True
            item_id = self.task_counter
            self.running[item_id] = copy.deepcopy(item)
            self.task_counter += 1
            self.queue_updated()
            return item, item_id

    def _work(self) -> None:
        while not self.stop_event.is_set():
            got = self._get()
            if got is not None:
                item, item_id = got
                try:
                    self._run(item, item_id)
                except Shutdown:
                    return
                finally:
                    with self.mutex:
                        self._busy = False
            with self.mutex:
                flags, self.flags = self.flags, {}
            if flags.get("free_memory"):
                self.executor.reset()

    def _run(self, item: QueueItem, item_id: int) -> None:
        _number, prompt_id, prompt, extra, outputs = item
        self.interrupt.clear()
        outcome = self.executor.execute(prompt, prompt_id, extra, outputs)
        with self.mutex:
            stored = self.running.pop(item_id)
            if len(self.history) > MAXIMUM_HISTORY_SIZE:
                self.history.pop(next(iter(self.history)))
            for key in SENSITIVE_EXTRA_DATA_KEYS:
                stored[3].pop(key, None)
            self.history[prompt_id] = {
                "prompt": list(stored),
                "outputs": outcome.outputs,
                "status": {
                    "status_str": "success" if outcome.success else "error",
                    "completed": outcome.success,
                    "messages": [list(m) for m in outcome.messages],
                },
                "meta": outcome.meta,
            }
            self.queue_updated()
        client_id = extra.get("client_id")
        if client_id is not None:
            self.emit("executing", {"node": None, "prompt_id": prompt_id}, client_id)

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing is queued or running; False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_idle():
                return True
            time.sleep(0.01)
        return self.is_idle()

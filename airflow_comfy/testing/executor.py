"""Running one accepted prompt: cache lookup, node order, node execution and the events they emit.

Mirrors ComfyUI 0.3.64's ``PromptExecutor.execute_async``: ``execution_start``, ``execution_cached``,
per node ``progress_state`` → ``executing`` → work (``progress``, previews, text) → ``executed`` →
``progress_state``, then ``execution_success`` / ``execution_error`` / ``execution_interrupted``.
Targeting follows the real server: with a ``client_id`` every event goes to that client; without
one only ``progress_state``, ``progress``, previews, TEXT frames and ``execution_interrupted`` are
broadcast and the rest is not sent at all.

Invariants: the cache holds only entries whose signature is used by the current prompt (ComfyUI's
classic cache), so an identical re-run reports every node cached and replays the same file names;
a node never runs before all nodes it links to.
"""

from __future__ import annotations

import io
import json
import math
import struct
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from airflow_comfy.protocol.events import PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA, TEXT
from airflow_comfy.protocol.ids import canonical_json
from airflow_comfy.testing.files import Folders
from airflow_comfy.testing.gates import Gates
from airflow_comfy.testing.nodes import NODES, format_value

# (event, data, sid): event is a text event name or a binary event type; sid None = every socket.
Emit = Callable[[str | int, Any, str | None], None]


class Interrupted(Exception):
    """ComfyUI's InterruptProcessingException: raised at a node boundary or in a progress report."""


class Shutdown(BaseException):
    """The server is stopping: abandon the prompt without writing history."""


@dataclass
class Outcome:
    """What the queue records in history for one run."""

    success: bool
    messages: list[tuple[str, dict[str, Any]]]
    outputs: dict[str, Any]
    meta: dict[str, Any]


@dataclass
class _Cached:
    outputs: tuple[Any, ...]
    ui: dict[str, Any] | None


@dataclass
class _Context:
    """The :class:`~airflow_comfy.testing.nodes.NodeContext` handed to a running node."""

    run: PromptRun
    node_id: str
    prompt_id: str
    prompt: Mapping[str, Any]
    folders: Folders

    def progress(self, value: int, total: int, preview: Image.Image | None = None) -> None:
        self.run.check_interrupt()
        self.run.update_progress(self.node_id, value, total, preview)

    def text(self, text: str) -> None:
        node = self.node_id.encode()
        self.run.emit(TEXT, struct.pack(">I", len(node)) + node + text.encode(), None)

    def sleep(self, seconds: float) -> None:
        self.run.sleep(seconds)

    def wait_gate(self, name: str, timeout: float) -> None:
        if not self.run.ex.gates.pass_through(name, timeout, self.run.ex.stop.is_set):
            raise Shutdown


@dataclass
class Executor:
    """Owns the output cache across prompts; :meth:`execute` runs one prompt in the calling thread."""

    folders: Folders
    emit: Emit
    supports_metadata: Callable[[str | None], bool]
    interrupt: threading.Event
    stop: threading.Event
    node_delays: Mapping[str, float] = field(default_factory=dict)
    gates: Gates = field(default_factory=Gates)
    cache: dict[str, _Cached] = field(default_factory=dict)

    def reset(self) -> None:
        """What /free does: drop every cached node output."""
        self.cache = {}

    def execute(
        self, prompt: dict[str, Any], prompt_id: str, extra: Mapping[str, Any], outputs: list[str]
    ) -> Outcome:
        return PromptRun(self, prompt, prompt_id, extra.get("client_id"), list(outputs)).run()


class PromptRun:
    """One execution of one prompt (ComfyUI's ``execute_async`` for a single queue item)."""

    def __init__(
        self, ex: Executor, prompt: dict[str, Any], prompt_id: str, client_id: str | None, outputs: list[str]
    ) -> None:
        self.ex, self.prompt, self.prompt_id, self.client_id = ex, prompt, prompt_id, client_id
        self.outputs = outputs
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.progress_nodes: dict[str, dict[str, Any]] = {}
        self.executed: list[str] = []
        self.sigs: dict[str, str] = {}

    # -- events -------------------------------------------------------------------------------
    def emit(self, event: str | int, data: Any, sid: str | None) -> None:
        self.ex.emit(event, data, sid)

    def add_message(self, event: str, data: dict[str, Any], broadcast: bool) -> None:
        data = {**data, "timestamp": int(time.time() * 1000)}
        self.messages.append((event, data))
        if self.client_id is not None or broadcast:
            self.emit(event, data, self.client_id)

    def send_client(self, event: str, data: dict[str, Any]) -> None:
        if self.client_id is not None:
            self.emit(event, data, self.client_id)

    def _send_progress_state(self) -> None:
        nodes = {
            nid: {
                "value": st["value"],
                "max": st["max"],
                "state": st["state"],
                "node_id": nid,
                "prompt_id": self.prompt_id,
                "display_node_id": nid,
                "parent_node_id": None,
                "real_node_id": nid,
            }
            for nid, st in self.progress_nodes.items()
            if st["state"] != "pending"
        }
        self.emit("progress_state", {"prompt_id": self.prompt_id, "nodes": nodes}, self.client_id)

    def start_progress(self, nid: str) -> None:
        self.progress_nodes[nid] = {"state": "running", "value": 0.0, "max": 1.0}
        self._send_progress_state()

    def finish_progress(self, nid: str) -> None:
        entry = self.progress_nodes.setdefault(nid, {"state": "pending", "value": 0, "max": 1})
        entry["state"], entry["value"] = "finished", entry["max"]
        self._send_progress_state()

    def update_progress(self, nid: str, value: int, total: int, preview: Image.Image | None) -> None:
        self.progress_nodes[nid] = {"state": "running", "value": value, "max": total}
        self._send_progress_state()
        metadata = self.ex.supports_metadata(self.client_id)
        if preview is not None and metadata:
            self.emit(PREVIEW_IMAGE_WITH_METADATA, self._preview_with_metadata(nid, preview), self.client_id)
        self.emit(
            "progress",
            {"value": value, "max": total, "prompt_id": self.prompt_id, "node": nid},
            self.client_id,
        )
        if preview is not None and not metadata:
            buffer = io.BytesIO()
            preview.save(buffer, format="PNG", compress_level=1)
            self.emit(PREVIEW_IMAGE, struct.pack(">I", 2) + buffer.getvalue(), self.client_id)

    def _preview_with_metadata(self, nid: str, preview: Image.Image) -> bytes:
        meta = {
            "node_id": nid,
            "prompt_id": self.prompt_id,
            "display_node_id": nid,
            "parent_node_id": None,
            "real_node_id": nid,
            "image_type": "image/png",
        }
        raw = json.dumps(meta).encode()
        buffer = io.BytesIO()
        preview.save(buffer, format="PNG", compress_level=1)
        return struct.pack(">I", len(raw)) + raw + buffer.getvalue()

    # -- control ------------------------------------------------------------------------------
    def check_interrupt(self) -> None:
        if self.ex.stop.is_set():
            raise Shutdown
        if self.ex.interrupt.is_set():
            raise Interrupted("Processing interrupted")

    def sleep(self, seconds: float) -> None:
        if seconds > 0 and self.ex.stop.wait(seconds):
            raise Shutdown

    # -- graph --------------------------------------------------------------------------------
    def signature(self, nid: str, seen: frozenset[str] = frozenset()) -> str:
        if nid in self.sigs:
            return self.sigs[nid]
        node = self.prompt.get(nid)
        if not isinstance(node, dict) or nid in seen:
            return f"missing:{nid}"
        impl = NODES.get(str(node.get("class_type")))
        changed: Any = None
        if impl is not None and impl.is_changed is not None:
            try:
                changed = impl.is_changed(self.ex.folders, node.get("inputs") or {})
            except Exception:
                changed = None
        if isinstance(changed, float) and math.isnan(changed):
            changed = f"nan:{time.monotonic_ns()}:{nid}"
        parts: dict[str, Any] = {}
        for name, value in (node.get("inputs") or {}).items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                parts[name] = ["link", self.signature(value[0], seen | {nid}), value[1]]
            else:
                parts[name] = ["value", value]
        self.sigs[nid] = canonical_json([node.get("class_type"), changed, parts])
        return self.sigs[nid]

    def order(self) -> list[str]:
        """Nodes to visit, dependencies first; cached non-output nodes are skipped like ComfyUI."""
        seen: set[str] = set()
        order: list[str] = []

        def visit(nid: str, is_output: bool) -> None:
            if nid in seen:
                return
            seen.add(nid)
            if not is_output and self.sigs[nid] in self.ex.cache:
                return
            for value in self.prompt[nid]["inputs"].values():
                if isinstance(value, list) and len(value) == 2:
                    visit(value[0], False)
            order.append(nid)

        for output in self.outputs:
            visit(output, True)
        return order

    # -- run ----------------------------------------------------------------------------------
    def run(self) -> Outcome:
        self.add_message("execution_start", {"prompt_id": self.prompt_id}, broadcast=False)
        for nid in self.prompt:
            self.signature(nid)
        wanted = set(self.sigs.values())
        self.ex.cache = {sig: v for sig, v in self.ex.cache.items() if sig in wanted}
        cached = [nid for nid in self.prompt if self.sigs[nid] in self.ex.cache]
        self.add_message("execution_cached", {"nodes": cached, "prompt_id": self.prompt_id}, broadcast=False)
        current_outputs = list(self.prompt)
        success = True
        for nid in self.order():
            try:
                self.run_node(nid)
            except Shutdown:
                raise
            except Interrupted:
                success = False
                data = self._failure(nid)
                self.add_message("execution_interrupted", data, broadcast=True)
                break
            except Exception as exc:
                success = False
                data = {
                    **self._failure(nid),
                    "exception_message": f"{exc}\n",
                    "exception_type": _type_name(exc),
                    "traceback": traceback.format_tb(exc.__traceback__),
                    "current_inputs": getattr(exc, "_standin_inputs", {}),
                    "current_outputs": current_outputs,
                }
                self.add_message("execution_error", data, broadcast=False)
                break
        else:
            self.add_message("execution_success", {"prompt_id": self.prompt_id}, broadcast=False)
        outputs: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        for nid in self.prompt:
            entry = self.ex.cache.get(self.sigs[nid])
            if entry is not None and entry.ui is not None:
                outputs[nid] = entry.ui
                meta[nid] = {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}
        return Outcome(success, self.messages, outputs, meta)

    def _failure(self, nid: str) -> dict[str, Any]:
        return {
            "prompt_id": self.prompt_id,
            "node_id": nid,
            "node_type": self.prompt[nid]["class_type"],
            "executed": list(self.executed),
        }

    def run_node(self, nid: str) -> None:
        sig = self.sigs[nid]
        hit = self.ex.cache.get(sig)
        if hit is not None:
            self.send_client(
                "executed", {"node": nid, "display_node": nid, "output": hit.ui, "prompt_id": self.prompt_id}
            )
            self.finish_progress(nid)
            return
        node = self.prompt[nid]
        class_type = node["class_type"]
        self.start_progress(nid)
        self.send_client("executing", {"node": nid, "display_node": nid, "prompt_id": self.prompt_id})
        self.check_interrupt()
        inputs: dict[str, Any] = {}
        for name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2:
                inputs[name] = self.ex.cache[self.sigs[value[0]]].outputs[value[1]]
            else:
                inputs[name] = value
        try:
            impl = NODES.get(class_type)
            if impl is None:
                raise RuntimeError(f"the stand-in server cannot run {class_type}")
            self.sleep(float(self.ex.node_delays.get(class_type, 0.0)))
            ctx = _Context(self, nid, self.prompt_id, self.prompt, self.ex.folders)
            results, ui = impl.run(ctx, inputs)
        except Exception as exc:
            exc._standin_inputs = {k: [format_value(v)] for k, v in inputs.items()}  # type: ignore[attr-defined]
            raise
        self.ex.cache[sig] = _Cached(tuple(results), ui)
        if ui is not None:
            self.send_client(
                "executed", {"node": nid, "display_node": nid, "output": ui, "prompt_id": self.prompt_id}
            )
        self.finish_progress(nid)
        self.executed.append(nid)


def _type_name(exc: BaseException) -> str:
    module = type(exc).__module__
    return type(exc).__qualname__ if module == "builtins" else f"{module}.{type(exc).__qualname__}"

"""ComfyUI WebSocket messages: decoding frames and following one prompt through them.

Text frames are JSON ``{"type", "data"}``. Binary frames start with a big-endian u32 event type:
1 PREVIEW_IMAGE (u32 format 1=JPEG/2=PNG, then the image), 3 TEXT (u32 node-id length, node id,
UTF-8 text), 4 PREVIEW_IMAGE_WITH_METADATA (u32 metadata length, JSON metadata, image).

What the real server (0.3.64) sends to the socket of the prompt's ``client_id``: execution_start,
execution_cached, per node ``executing``/``progress``/``executed``, then ``execution_success`` (or
``execution_error`` / ``execution_interrupted``), a ``status`` broadcast, and last
``executing`` with ``node: null``. History is written *before* that last message and *after*
``execution_success``.

Every socket, whatever its ``clientId``, also gets the ``status`` broadcast (``queue_remaining``:
pending plus running) on each queue change: once on connect (with ``sid``), on enqueue (+1), on
dequeue (unchanged) and after ``task_done`` wrote a history entry or a pending prompt was deleted
(-1). :func:`queue_signal` reads just that from a raw frame, for the triggerer's listener.

Invariants: :class:`PromptTracker` reports ``finished`` only on ``executing`` with ``node: null`` for
its own prompt id, so a caller that then reads /history always finds the entry; :func:`queue_signal`
parses no frame larger than :data:`MAX_SIGNAL_FRAME` and no ``progress_state`` frame.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_comfy.protocol.outputs import OutputRef, refs_from_outputs
from airflow_comfy.protocol.states import PromptState

PREVIEW_IMAGE = 1
UNENCODED_PREVIEW_IMAGE = 2
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4
BINARY_EVENT_NAMES = {
    PREVIEW_IMAGE: "PREVIEW_IMAGE",
    UNENCODED_PREVIEW_IMAGE: "UNENCODED_PREVIEW_IMAGE",
    TEXT: "TEXT",
    PREVIEW_IMAGE_WITH_METADATA: "PREVIEW_IMAGE_WITH_METADATA",
}
IMAGE_FORMATS = {1: "image/jpeg", 2: "image/png"}
#: Text frames dropped unread: how ComfyUI's ``send_json`` starts them (``json.dumps`` spacing).
SKIPPED_PREFIXES = (b'{"type": "progress_state"',)
#: Messages that announce the end of a prompt (sent to its client, ``execution_interrupted`` to all).
END_MESSAGES = frozenset({"execution_success", "execution_error", "execution_interrupted"})
#: A ``status`` frame is about 70 bytes; larger frames are never parsed for a queue signal.
MAX_SIGNAL_FRAME = 16 * 1024


@dataclass(frozen=True)
class WsEvent:
    """One text message."""

    type: str
    data: Mapping[str, Any]

    @property
    def prompt_id(self) -> str | None:
        value = self.data.get("prompt_id")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class BinaryEvent:
    """One decoded binary message; ``payload`` is the image bytes (or UTF-8 text for TEXT)."""

    event_type: int
    name: str
    payload: bytes = b""
    image_type: str | None = None
    node_id: str | None = None
    text: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def prompt_id(self) -> str | None:
        value = self.metadata.get("prompt_id")
        return value if isinstance(value, str) else None


def parse_text_frame(frame: str | bytes) -> WsEvent | None:
    """Parse a text frame; ``None`` for anything that is not a ``{"type": str, "data": dict}`` object."""
    try:
        message = json.loads(frame)
    except (ValueError, TypeError):
        return None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return None
    data = message.get("data")
    return WsEvent(message["type"], data if isinstance(data, dict) else {})


@dataclass(frozen=True)
class QueueSignal:
    """What one frame says about the server's queue.

    ``queue_remaining``: the count of a ``status`` message (``None`` when absent or not an int);
    ``greeting``: the ``status`` sent on connect (it carries the socket's ``sid``); ``ended``: an
    end message (:data:`END_MESSAGES`).
    """

    queue_remaining: int | None = None
    greeting: bool = False
    ended: bool = False


def queue_signal(frame: bytes | str) -> QueueSignal | None:
    """The queue signal in a raw frame, or ``None`` for any other frame (never raises)."""
    if isinstance(frame, str):
        frame = frame.encode("utf-8", "replace")
    if len(frame) > MAX_SIGNAL_FRAME or frame.startswith(SKIPPED_PREFIXES):
        return None
    event = parse_text_frame(frame)
    if event is None:
        return None
    if event.type in END_MESSAGES:
        return QueueSignal(ended=True)
    if event.type != "status":
        return None
    status = event.data.get("status")
    info = status.get("exec_info") if isinstance(status, dict) else None
    remaining = info.get("queue_remaining") if isinstance(info, dict) else None
    if not isinstance(remaining, int) or isinstance(remaining, bool):
        remaining = None
    return QueueSignal(queue_remaining=remaining, greeting="sid" in event.data)


def decode_binary_frame(frame: bytes) -> BinaryEvent | None:
    """Decode a binary frame; ``None`` when it is too short or malformed."""
    if len(frame) < 4:
        return None
    (event_type,) = struct.unpack(">I", frame[:4])
    name = BINARY_EVENT_NAMES.get(event_type, f"UNKNOWN_{event_type}")
    body = frame[4:]
    try:
        if event_type == PREVIEW_IMAGE and len(body) >= 4:
            (fmt,) = struct.unpack(">I", body[:4])
            return BinaryEvent(event_type, name, body[4:], image_type=IMAGE_FORMATS.get(fmt))
        if event_type == TEXT and len(body) >= 4:
            (length,) = struct.unpack(">I", body[:4])
            node_id = body[4 : 4 + length].decode("utf-8")
            text = body[4 + length :].decode("utf-8", errors="replace")
            return BinaryEvent(event_type, name, body[4 + length :], node_id=node_id, text=text)
        if event_type == PREVIEW_IMAGE_WITH_METADATA and len(body) >= 4:
            (length,) = struct.unpack(">I", body[:4])
            metadata = json.loads(body[4 : 4 + length].decode("utf-8"))
            if not isinstance(metadata, dict):
                return None
            return BinaryEvent(
                event_type,
                name,
                body[4 + length :],
                image_type=metadata.get("image_type"),
                node_id=metadata.get("node_id"),
                metadata=metadata,
            )
    except (ValueError, UnicodeDecodeError):
        return None
    return BinaryEvent(event_type, name, body)


def encode_binary_frame(event_type: int, payload: bytes) -> bytes:
    """The inverse of the framing: u32 event type then ``payload`` (used by the stand-in server)."""
    return struct.pack(">I", event_type) + payload


@dataclass
class PromptTracker:
    """Folds WebSocket events into the progress and outcome of one prompt.

    Feed every text event with :meth:`feed`; events of other prompts are ignored. ``finished``
    turns true on the end marker (``executing`` with ``node: null``). ``state`` is the outcome the
    events announced; the history entry read after ``finished`` stays the authority for outputs.
    """

    prompt_id: str
    total_nodes: int | None = None
    started: bool = False
    finished: bool = False
    state: PromptState = PromptState.PENDING
    current_node: str | None = None
    nodes_done: set[str] = field(default_factory=set)
    cached_nodes: set[str] = field(default_factory=set)
    progress: tuple[float, float] | None = None
    failure: Mapping[str, Any] | None = None
    outputs: list[OutputRef] = field(default_factory=list)
    queue_remaining: int | None = None

    def feed(self, event: WsEvent) -> bool:
        """Apply ``event``; return True when it concerned this prompt (or the queue)."""
        if event.type == "status":
            info = (event.data.get("status") or {}).get("exec_info") or {}
            if isinstance(info.get("queue_remaining"), int):
                self.queue_remaining = info["queue_remaining"]
            return True
        if event.prompt_id != self.prompt_id:
            return False
        data = event.data
        if event.type == "execution_start":
            self.started = True
            self.state = PromptState.RUNNING
        elif event.type == "execution_cached":
            self.cached_nodes.update(str(n) for n in data.get("nodes") or [])
            self.state = PromptState.RUNNING
        elif event.type == "executing":
            node = data.get("node")
            if node is None:
                self.finished = True
                if not self.state.is_terminal:
                    # The end marker without an outcome message: history decides.
                    self.state = PromptState.RUNNING
            else:
                if self.current_node is not None:
                    self.nodes_done.add(self.current_node)
                self.current_node = str(node)
                self.progress = None
                self.state = PromptState.RUNNING
        elif event.type == "progress":
            value, maximum = data.get("value"), data.get("max")
            if isinstance(value, int | float) and isinstance(maximum, int | float):
                self.progress = (float(value), float(maximum))
        elif event.type == "executed":
            self.nodes_done.add(str(data.get("node")))
            self.outputs.extend(refs_from_outputs({str(data.get("node")): data.get("output") or {}}))
        elif event.type == "execution_success":
            self.state = PromptState.SUCCESS
        elif event.type == "execution_error":
            self.state, self.failure = PromptState.ERROR, data
        elif event.type == "execution_interrupted":
            self.state, self.failure = PromptState.INTERRUPTED, data
        return True

    @property
    def nodes_completed(self) -> int:
        return len(self.nodes_done | self.cached_nodes)

    def describe(self) -> str:
        """A one-line progress summary for logs: ``node 3 of 5 (ImageBlur...) 40%``."""
        if not self.started:
            return "queued, waiting to start"
        total = f" of {self.total_nodes}" if self.total_nodes else ""
        text = f"running node {self.current_node or '?'}, {self.nodes_completed}{total} done"
        if self.progress and self.progress[1]:
            text += f", step {int(self.progress[0])}/{int(self.progress[1])}"
        return text

"""WebSocket frames and PromptTracker, fed with the recorded message sequences of ComfyUI 0.3.64."""

from __future__ import annotations

import json
import struct

import pytest

from airflow_comfy.protocol.events import (
    PREVIEW_IMAGE,
    PREVIEW_IMAGE_WITH_METADATA,
    TEXT,
    BinaryEvent,
    PromptTracker,
    WsEvent,
    decode_binary_frame,
    encode_binary_frame,
    parse_text_frame,
)
from airflow_comfy.protocol.states import PromptState
from protocol.protocol_transcripts import names, transcript

PNG_MAGIC = bytes.fromhex("89504e470d0a1a0a")


def _prompt_id(record: dict) -> str:
    return record["submit"]["response"]["body"]["prompt_id"]


def _text_events(messages: list[dict]) -> list[WsEvent]:
    events = []
    for message in messages:
        if message["kind"] == "text":
            event = parse_text_frame(json.dumps({"type": message["type"], "data": message["data"]}))
            assert event is not None
            events.append(event)
    return events


def _run(record: dict, messages: list[dict] | None = None, total_nodes: int | None = None) -> PromptTracker:
    tracker = PromptTracker(_prompt_id(record), total_nodes=total_nodes)
    for event in _text_events(messages if messages is not None else record["messages"]):
        assert not tracker.finished, f"events after the end marker: {event.type}"
        tracker.feed(event)
    return tracker


def _frame_from_transcript(message: dict) -> bytes:
    """Rebuild a binary frame from the decoded header the transcript kept."""
    image = PNG_MAGIC + b"\0" * (message.get("image_bytes", 8) - len(PNG_MAGIC))
    kind = message["event_type"]
    if kind == PREVIEW_IMAGE:
        fmt = {"JPEG": 1, "PNG": 2}[message["image_format"]]
        frame = encode_binary_frame(PREVIEW_IMAGE, struct.pack(">I", fmt) + image)
    elif kind == TEXT:
        node = message["node_id"].encode()
        frame = encode_binary_frame(TEXT, struct.pack(">I", len(node)) + node + message["text"].encode())
    elif kind == PREVIEW_IMAGE_WITH_METADATA:
        meta = json.dumps(message["metadata"]).encode()
        frame = encode_binary_frame(PREVIEW_IMAGE_WITH_METADATA, struct.pack(">I", len(meta)) + meta + image)
    else:  # pragma: no cover - the contract has no other types
        raise AssertionError(kind)
    # Same length and same leading bytes as the frame the real server sent.
    assert len(frame) == message["length"]
    prefix = bytes.fromhex(message["first_bytes_hex"])
    assert frame[: len(prefix)] == prefix
    return frame


def test_success_sequence():
    record = transcript("ws_success")
    tracker = _run(record, total_nodes=4)
    assert tracker.finished and tracker.started
    assert tracker.state is PromptState.SUCCESS and tracker.failure is None
    assert tracker.nodes_completed == 4
    assert [(r.node_id, r.subfolder, r.type) for r in tracker.outputs] == [("4", "contract", "output")]
    assert tracker.queue_remaining == 0


def test_not_finished_before_the_end_marker():
    record = transcript("ws_success")
    messages = record["messages"]
    end = max(i for i, m in enumerate(messages) if m.get("type") == "executing" and m["data"]["node"] is None)
    tracker = _run(record, messages[:end])
    # execution_success arrived, but history is only guaranteed after the end marker.
    assert tracker.state is PromptState.SUCCESS and not tracker.finished


def test_describe_while_running():
    record = transcript("ws_success")
    tracker = PromptTracker(_prompt_id(record), total_nodes=4)
    assert tracker.describe() == "queued, waiting to start"
    events = _text_events(record["messages"])
    for event in events[:3]:  # status broadcasts only: a queue length may predate this prompt
        tracker.feed(event)
    assert tracker.describe() == "queued, waiting to start"  # never "0 items" while it is queued
    executing = next(i for i, e in enumerate(events) if e.type == "executing" and e.data.get("node") == "3")
    for event in events[3 : executing + 1]:
        tracker.feed(event)
    assert tracker.state is PromptState.RUNNING and tracker.current_node == "3"
    assert tracker.describe() == "running node 3, 2 of 4 done"
    tracker.feed(WsEvent("progress", {"value": 3, "max": 10, "prompt_id": tracker.prompt_id, "node": "3"}))
    assert tracker.progress == (3.0, 10.0)
    assert tracker.describe().endswith(", step 3/10")


def test_cached_sequence():
    record = transcript("ws_cached")
    tracker = _run(record, total_nodes=2)
    assert tracker.finished and tracker.state is PromptState.SUCCESS
    assert tracker.cached_nodes and tracker.nodes_completed >= len(tracker.cached_nodes)
    assert tracker.current_node is None  # no per-node executing when everything is cached
    assert len(tracker.outputs) == 1


def test_error_sequence():
    record = transcript("ws_error")
    tracker = _run(record)
    assert tracker.finished and tracker.state is PromptState.ERROR
    assert tracker.failure["node_id"] == "2" and tracker.failure["exception_type"] == "RuntimeError"


def test_interrupted_sequence():
    record = transcript("ws_interrupted")
    tracker = _run(record)
    assert tracker.finished and tracker.state is PromptState.INTERRUPTED
    assert tracker.failure["node_id"] == "13" and tracker.failure["node_type"] == "ImageBlur"


@pytest.mark.parametrize("name", ["ws_progress", "ws_progress_metadata", "ws_progress_text"])
def test_progress_sequences_succeed(name):
    record = transcript(name)
    tracker = _run(record)
    assert tracker.finished and tracker.state is PromptState.SUCCESS


def test_progress_values():
    record = transcript("ws_progress")
    tracker = PromptTracker(_prompt_id(record))
    seen = []
    for event in _text_events(record["messages"]):
        tracker.feed(event)
        if event.type == "progress":
            seen.append(tracker.progress)
    assert seen and all(p is not None and p[0] <= p[1] for p in seen)


@pytest.mark.parametrize("name", ["ws_no_client_id", "ws_no_client_id_progress"])
def test_without_client_id_nothing_finishes(name):
    # The socket gets only broadcasts: the tracker never sees the end, so callers must poll.
    record = transcript(name)
    tracker = _run(record)
    assert not tracker.finished and not tracker.started
    assert tracker.state is PromptState.PENDING


def test_without_client_id_interrupt_is_broadcast():
    record = transcript("ws_no_client_id_interrupted")
    tracker = _run(record)
    assert tracker.state is PromptState.INTERRUPTED and not tracker.finished


def test_two_clients_other_socket_sees_nothing_of_the_prompt():
    record = transcript("ws_two_clients")
    prompt_id = record["submit"]["response"]["body"]["prompt_id"]
    mine = PromptTracker(prompt_id)
    for event in _text_events(record["client_a"]["messages"]):
        mine.feed(event)
    assert mine.finished and mine.state is PromptState.SUCCESS
    other = PromptTracker(prompt_id)
    for event in _text_events(record["client_b"]["messages"]):
        other.feed(event)
    assert not other.started and not other.finished


def test_events_of_other_prompts_are_ignored():
    record = transcript("ws_success")
    tracker = PromptTracker("not-this-prompt")
    results = [tracker.feed(e) for e in _text_events(record["messages"])]
    assert not tracker.finished and not tracker.started and tracker.outputs == []
    # Only the status broadcasts concerned it.
    assert sum(results) == sum(1 for m in record["messages"] if m.get("type") == "status")


def test_end_marker_without_outcome_leaves_the_decision_to_history():
    tracker = PromptTracker("p")
    tracker.feed(WsEvent("execution_start", {"prompt_id": "p"}))
    tracker.feed(WsEvent("executing", {"node": None, "prompt_id": "p"}))
    assert tracker.finished and tracker.state is PromptState.RUNNING


@pytest.mark.parametrize("name", [n for n in names("ws_") if n != "ws_two_clients"])
def test_binary_frames_decode(name):
    record = transcript(name)
    binary = [m for m in record["messages"] if m["kind"] == "binary"]
    for message in binary:
        event = decode_binary_frame(_frame_from_transcript(message))
        assert isinstance(event, BinaryEvent)
        assert event.event_type == message["event_type"] and event.name == message["event"]
        if event.event_type == PREVIEW_IMAGE:
            assert event.image_type == "image/png" and event.payload.startswith(PNG_MAGIC)
            assert len(event.payload) == message["image_bytes"]
        elif event.event_type == TEXT:
            assert event.node_id == message["node_id"] and event.text == message["text"]
        else:
            assert event.metadata == message["metadata"]
            assert event.prompt_id == message["metadata"]["prompt_id"]
            assert event.node_id == message["metadata"]["node_id"]
            assert event.image_type == "image/png" and event.payload.startswith(PNG_MAGIC)


def test_every_binary_type_is_covered_by_the_contract():
    kinds = {
        m["event_type"]
        for n in names("ws_")
        if n != "ws_two_clients"
        for m in transcript(n)["messages"]
        if m["kind"] == "binary"
    }
    assert kinds == {PREVIEW_IMAGE, TEXT, PREVIEW_IMAGE_WITH_METADATA}


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x00\x00\x01",
        encode_binary_frame(PREVIEW_IMAGE_WITH_METADATA, struct.pack(">I", 5) + b"nojso"),
        encode_binary_frame(PREVIEW_IMAGE_WITH_METADATA, struct.pack(">I", 2) + b"[]"),
        encode_binary_frame(TEXT, struct.pack(">I", 2) + b"\xff\xfe"),
    ],
)
def test_malformed_binary_frames(frame):
    assert decode_binary_frame(frame) is None


def test_unknown_and_short_binary_types_pass_through():
    event = decode_binary_frame(encode_binary_frame(99, b"abc"))
    assert event is not None and event.name == "UNKNOWN_99" and event.payload == b"abc"
    event = decode_binary_frame(encode_binary_frame(2, b"raw"))
    assert event is not None and event.name == "UNENCODED_PREVIEW_IMAGE"
    jpeg = decode_binary_frame(encode_binary_frame(PREVIEW_IMAGE, struct.pack(">I", 1) + b"\xff\xd8"))
    assert jpeg.image_type == "image/jpeg" and jpeg.payload == b"\xff\xd8"


@pytest.mark.parametrize(
    "frame",
    ["not json", "[1, 2]", '{"data": {}}', '{"type": 3, "data": {}}', b"\xff\xfe", None],
)
def test_parse_text_frame_rejects(frame):
    assert parse_text_frame(frame) is None


def test_parse_text_frame_accepts_bytes_and_missing_data():
    event = parse_text_frame(b'{"type": "status"}')
    assert event == WsEvent("status", {})
    event = parse_text_frame('{"type": "executing", "data": {"node": "1", "prompt_id": "p"}}')
    assert event.prompt_id == "p"
    assert WsEvent("x", {"prompt_id": 5}).prompt_id is None

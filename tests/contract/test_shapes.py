"""The comparison helpers themselves: they must notice the differences the contract tests rely on."""

from __future__ import annotations

import json
import struct

from .clients import parse_binary
from .shapes import collapse, is_subsequence, rebind, shape_diff, tiny_png


def test_shape_diff_accepts_other_values_of_the_same_shape() -> None:
    recorded = {
        "prompt_id": "a",
        "number": 3,
        "node_errors": {},
        "images": [{"filename": "x.png", "type": "output"}],
    }
    actual = {"prompt_id": "b", "number": 7, "node_errors": {}, "images": []}
    assert shape_diff(recorded, actual) == []


def test_shape_diff_reports_keys_types_tuples_and_stable_values() -> None:
    assert shape_diff({"a": 1}, {"a": 1, "b": 2}) == ["$: unexpected keys ['b']"]
    assert shape_diff({"a": 1, "b": 2}, {"a": 1}) == ["$: missing keys ['b']"]
    assert shape_diff({"a": 1}, {"a": 1.0})[0].startswith("$.a: expected int, got float")
    assert shape_diff({"a": None}, {"a": "x"})
    assert shape_diff([1, "x", {}], [1, "x"])  # a tuple keeps its length
    assert shape_diff([{"k": 1}], [{"k": 1}, {"j": 1}])  # every item of a homogeneous list
    assert shape_diff({"type": "output"}, {"type": "temp"}) == ["$.type: expected value 'output', got 'temp'"]
    assert shape_diff({"error": {"type": "no_prompt"}}, {"error": "no_prompt"})


def test_collapse_subsequence_rebind() -> None:
    assert collapse(["s", "s", "p", "e", "p", "p"]) == ["s", "p", "e", "p"]
    assert is_subsequence(["a", "c"], ["a", "b", "c"]) and not is_subsequence(["c", "a"], ["a", "b", "c"])
    assert rebind({"old": ["old", 1]}, {"old": "new"}) == {"new": ["new", 1]}


def test_parse_binary_frames() -> None:
    png = tiny_png(1)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and tiny_png(1) == png != tiny_png(2)
    preview = parse_binary(struct.pack(">II", 1, 2) + png)
    assert preview.type == "binary:PREVIEW_IMAGE" and preview.data["image_format"] == "PNG"
    text = parse_binary(struct.pack(">II", 3, 1) + b"2" + b"hello")
    assert text.data["node_id"] == "2" and text.data["text"] == "hello"
    meta = json.dumps({"node_id": "2", "prompt_id": "p"}).encode()
    frame = parse_binary(struct.pack(">II", 4, len(meta)) + meta + png)
    assert frame.type == "binary:PREVIEW_IMAGE_WITH_METADATA" and frame.prompt_id == "p"

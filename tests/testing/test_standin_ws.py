"""/ws on the stand-in: the same event order and targeting as the recorded WebSocket transcripts."""

from __future__ import annotations

import copy

import pytest
import requests
from standin_helpers import gated, load_transcript, submit

CLIENT_TRANSCRIPTS = ["ws_success", "ws_error", "ws_progress", "ws_progress_text"]


def _prompt(name: str) -> dict:
    return copy.deepcopy(load_transcript(name)["submit"]["request"]["json"]["prompt"])


@pytest.mark.parametrize("name", CLIENT_TRANSCRIPTS)
def test_event_order_matches(standin, ws_factory, name: str) -> None:
    ws = ws_factory("me")
    prompt_id = submit(standin, _prompt(name), client_id="me")["prompt_id"]
    ws.until_end(prompt_id)
    assert ws.types() == load_transcript(name)["types_in_order"]
    assert ws.messages[0][1]["sid"] == "me"
    for event, data in ws.messages[3:]:
        if not event.startswith("binary") and event != "status":
            assert data["prompt_id"] == prompt_id


def test_success_details(standin, ws_factory) -> None:
    ws = ws_factory("me")
    prompt_id = submit(standin, _prompt("ws_success"), client_id="me")["prompt_id"]
    ws.until_end(prompt_id)
    by_type = {}
    for event, data in ws.messages:
        by_type.setdefault(event, []).append(data)
    assert [d["status"]["exec_info"]["queue_remaining"] for d in by_type["status"]] == [0, 1, 1, 0]
    assert [d["node"] for d in by_type["executing"]] == ["1", "2", "3", "4", None]
    executed = by_type["executed"][0]
    assert executed["output"]["images"][0]["subfolder"] == "contract"
    recorded = load_transcript("ws_success")["messages"]
    states = [m["data"] for m in recorded if m.get("type") == "progress_state"]
    got_states = [d for d in by_type["progress_state"]]
    assert [sorted(s["nodes"]) for s in got_states] == [sorted(s["nodes"]) for s in states]
    assert got_states[-1]["nodes"]["4"] == {**states[-1]["nodes"]["4"], "prompt_id": prompt_id}
    # history is written before the end marker
    assert prompt_id in requests.get(f"{standin.url}/history/{prompt_id}", timeout=10).json()


def test_cached_rerun_replays_the_output(standin, ws_factory) -> None:
    ws = ws_factory("me")
    first = submit(standin, _prompt("ws_cached"), client_id="me")["prompt_id"]
    ws.until_end(first)
    first_output = next(d for t, d in ws.messages if t == "executed")["output"]
    ws.messages.clear()
    second = submit(standin, _prompt("ws_cached"), client_id="me")["prompt_id"]
    ws.until_end(second)
    assert ["status", *ws.types()] == load_transcript("ws_cached")["types_in_order"]
    cached = next(d for t, d in ws.messages if t == "execution_cached")
    assert cached["nodes"] == ["1", "2", "3", "4"]
    assert next(d for t, d in ws.messages if t == "executed")["output"] == first_output
    state = next(d for t, d in ws.messages if t == "progress_state")["nodes"]
    assert list(state) == ["4"] and (state["4"]["value"], state["4"]["max"]) == (1, 1)


def test_error_event_fields(standin, ws_factory) -> None:
    ws = ws_factory("me")
    prompt_id = submit(standin, _prompt("ws_error"), client_id="me")["prompt_id"]
    ws.until_end(prompt_id)
    error = next(d for t, d in ws.messages if t == "execution_error")
    recorded = next(
        m["data"] for m in load_transcript("ws_error")["messages"] if m.get("type") == "execution_error"
    )
    assert set(error) == set(recorded)
    assert (error["node_id"], error["node_type"], error["executed"]) == ("2", "ImageBlur", ["1"])
    assert error["exception_type"] == "RuntimeError"
    assert error["exception_message"].startswith("Argument #4: Padding size should be less than")
    assert error["exception_message"] == recorded["exception_message"]
    assert set(error["current_inputs"]) == {"image", "blur_radius", "sigma"}


def test_previews_and_text_frames(standin, ws_factory) -> None:
    ws = ws_factory("me")
    prompt_id = submit(standin, _prompt("ws_progress"), client_id="me")["prompt_id"]
    ws.until_end(prompt_id)
    previews = [d for t, d in ws.messages if t == "binary:PREVIEW_IMAGE"]
    assert len(previews) == 3 and all(p.image_type == "image/png" for p in previews)
    assert previews[0].payload.startswith(b"\x89PNG")
    progress = [d for t, d in ws.messages if t == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(0, 3, "2"), (1, 3, "2"), (2, 3, "2")]
    ws.messages.clear()
    prompt_id = submit(standin, _prompt("ws_progress_text"), client_id="me")["prompt_id"]
    ws.until_end(prompt_id)
    text = next(d for t, d in ws.messages if t == "binary:TEXT")
    assert (text.node_id, text.text) == ("2", "width: 320, height: 200\n batch size: 2")
    assert next(d for t, d in ws.messages if t == "executed")["output"] == {"text": ["320"]}


def test_feature_flags_switch_previews_to_metadata(standin, ws_factory) -> None:
    ws = ws_factory("me", feature_flags=True)
    assert ws.messages[1] == (
        "feature_flags",
        {"supports_preview_metadata": True, "max_upload_size": 104857600},
    )
    prompt_id = submit(standin, _prompt("ws_progress_metadata"), client_id="me")["prompt_id"]
    ws.until_end(prompt_id)
    assert ws.types() == load_transcript("ws_progress_metadata")["types_in_order"]
    preview = next(d for t, d in ws.messages if t == "binary:PREVIEW_IMAGE_WITH_METADATA")
    assert preview.metadata == {
        "node_id": "2",
        "prompt_id": prompt_id,
        "display_node_id": "2",
        "parent_node_id": None,
        "real_node_id": "2",
        "image_type": "image/png",
    }


@pytest.mark.parametrize("name", ["ws_no_client_id", "ws_no_client_id_progress"])
def test_without_client_id_only_broadcasts(standin, ws_factory, name: str) -> None:
    ws = ws_factory("watcher")
    submit(standin, _prompt(name))
    standin.wait_idle(30)
    ws.drain()
    assert ws.types() == load_transcript(name)["types_in_order"]


def test_socket_without_client_id_gets_a_generated_sid(standin, ws_factory) -> None:
    ws = ws_factory(None)
    sid = ws.messages[0][1]["sid"]
    assert isinstance(sid, str) and len(sid) == 32
    prompt_id = submit(standin, _prompt("ws_success"), client_id=sid)["prompt_id"]
    ws.until_end(prompt_id)
    assert "execution_success" in ws.types()


def test_two_clients(standin, ws_factory) -> None:
    record = load_transcript("ws_two_clients")
    a, b = ws_factory("A"), ws_factory("B")
    prompt_id = submit(standin, record["submit"]["request"]["json"]["prompt"], client_id="A")["prompt_id"]
    a.until_end(prompt_id)
    b.drain()
    assert a.types() == record["client_a"]["types_in_order"]
    assert b.types() == record["client_b"]["types_in_order"]


# The recordings sent /interrupt while node 12 (11 without a client id) ran; here that node is a gate
# held until the interrupt was acknowledged (the 200 of POST /interrupt comes after the flag is set),
# so the interrupt acts at the next node boundary on an idle or a loaded machine alike.


def test_interrupt_by_prompt_id_at_the_next_node(standin, ws_factory) -> None:
    ws = ws_factory("me")
    prompt_id = submit(standin, gated(_prompt("ws_interrupted"), "12"), client_id="me")["prompt_id"]
    standin.gates.wait_blocked("gate")
    response = requests.post(standin.url + "/interrupt", json={"prompt_id": prompt_id}, timeout=10)
    assert response.status_code == 200
    standin.gates.release("gate")
    ws.until_end(prompt_id)
    assert ws.types() == load_transcript("ws_interrupted")["types_in_order"]
    event = next(d for t, d in ws.messages if t == "execution_interrupted")
    assert event["node_id"] == "13" and sorted(event["executed"]) == ["1", "10", "11", "12"]


def test_interrupt_without_client_id_is_broadcast(standin, ws_factory) -> None:
    ws = ws_factory("watcher")
    submit(standin, gated(_prompt("ws_no_client_id_interrupted"), "11"))
    standin.gates.wait_blocked("gate")
    assert requests.post(standin.url + "/interrupt", timeout=10).status_code == 200
    standin.gates.release("gate")
    standin.wait_idle(30)
    ws.drain()
    assert ws.types() == load_transcript("ws_no_client_id_interrupted")["types_in_order"]
    event = next(d for t, d in ws.messages if t == "execution_interrupted")
    assert event["node_id"] == "12" and sorted(event["executed"]) == ["1", "10", "11"]

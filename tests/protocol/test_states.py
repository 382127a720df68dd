"""Prompt states from the recorded /history and /queue bodies of a real ComfyUI 0.3.64."""

from __future__ import annotations

import pytest

from airflow_comfy.protocol.states import (
    PromptState,
    queue_ids,
    resolve_status,
    status_from_history,
    status_from_queue,
)
from protocol.protocol_transcripts import response_body, transcript

EMPTY_QUEUE = {"queue_running": [], "queue_pending": []}


def _only_id(body: dict) -> str:
    (prompt_id,) = body.keys()
    return prompt_id


def test_history_done_is_success_with_outputs():
    body = response_body("history_done")
    prompt_id = _only_id(body)
    status = status_from_history(prompt_id, body)
    assert status is not None
    assert status.state is PromptState.SUCCESS and status.is_terminal
    assert status.failure is None
    assert [(r.node_id, r.kind, r.subfolder, r.type) for r in status.outputs] == [
        ("2", "images", "contract", "output")
    ]
    assert status.outputs[0].filename.startswith("empty_") and status.outputs[0].filename.endswith(".png")
    assert [name for name, _ in status.messages] == [
        "execution_start",
        "execution_cached",
        "execution_success",
    ]


@pytest.mark.parametrize("name", ["history_error", "history_error_corrupt_image"])
def test_history_error_is_error_with_failure(name):
    body = response_body(name)
    prompt_id = _only_id(body)
    status = status_from_history(prompt_id, body)
    assert status is not None and status.state is PromptState.ERROR
    assert status.failure is not None
    assert status.failure["prompt_id"] == prompt_id
    assert status.failure["exception_type"]
    assert status.failure["node_type"] in ("ImageBlur", "LoadImage")
    assert status.outputs == ()


def test_history_error_corrupt_image_names_pil():
    body = response_body("history_error_corrupt_image")
    status = status_from_history(_only_id(body), body)
    assert status is not None and "UnidentifiedImageError" in status.failure["exception_type"]


def test_history_interrupted_is_told_from_error_by_its_last_message():
    body = response_body("history_interrupted")
    prompt_id = _only_id(body)
    entry = body[prompt_id]
    assert entry["status"]["status_str"] == "error"  # what the server says...
    status = status_from_history(prompt_id, body)
    assert status is not None and status.state is PromptState.INTERRUPTED  # ...and what it means
    assert status.failure["node_id"] and status.failure["executed"]


def test_history_batch_preview_and_text():
    batch = response_body("history_batch")
    status = status_from_history(_only_id(batch), batch)
    assert status is not None and len(status.outputs) == 3
    assert len({r.filename for r in status.outputs}) == 3

    preview = response_body("history_preview")
    status = status_from_history(_only_id(preview), preview)
    assert status is not None and [r.type for r in status.outputs] == ["temp"]

    text = response_body("history_text_output")
    status = status_from_history(_only_id(text), text)
    assert status is not None and status.state is PromptState.SUCCESS
    assert status.outputs == () and dict(status.texts) == {"3": ["320"]}


@pytest.mark.parametrize(
    "name", ["history_pending", "history_running", "history_unknown", "history_deleted_pending"]
)
def test_empty_history_is_no_answer(name):
    body = response_body(name)
    assert body == {}
    prompt_id = transcript(name)["request"]["path"].rsplit("/", 1)[-1]
    assert status_from_history(prompt_id, body) is None
    assert resolve_status(prompt_id, body, EMPTY_QUEUE).state is PromptState.NOT_FOUND


def test_history_all_classifies_every_entry():
    body = response_body("history_all")
    assert len(body) > 3
    for prompt_id, entry in body.items():
        status = status_from_history(prompt_id, body)
        assert status.prompt_id == prompt_id and status.is_terminal
        assert (status.state is PromptState.SUCCESS) == (entry["status"]["status_str"] == "success")


def test_other_prompt_in_history_is_not_ours():
    body = response_body("history_done")
    assert status_from_history("someone-else", body) is None
    assert status_from_history("x", [1, 2]) is None
    assert status_from_history("x", {"x": "not an entry"}) is None


def test_queue_busy_running_and_pending_positions():
    body = response_body("queue_busy")
    running_id = body["queue_running"][0][1]
    pending = sorted(body["queue_pending"], key=lambda item: item[0])
    status = status_from_queue(running_id, body)
    assert status is not None and status.state is PromptState.RUNNING and not status.is_terminal
    assert status.queue_size == 2
    for position, item in enumerate(pending):
        status = status_from_queue(item[1], body)
        assert status is not None and status.state is PromptState.PENDING
        assert status.queue_position == position and status.queue_size == 2
    assert status_from_queue("unknown", body) is None
    assert queue_ids(body) == ([running_id], [item[1] for item in pending])


def test_pending_position_follows_number_not_list_order():
    # ComfyUI's pending list is a heap; ``front`` gives negative numbers that run first.
    body = {
        "queue_running": [],
        "queue_pending": [[5, "late", {}, {}, []], [-1, "front", {}, {}, []], [3, "early", {}, {}, []]],
    }
    assert [status_from_queue(p, body).queue_position for p in ("front", "early", "late")] == [0, 1, 2]
    assert queue_ids(body) == ([], ["front", "early", "late"])


def test_history_wins_over_queue():
    history = response_body("history_done")
    prompt_id = _only_id(history)
    queue = {"queue_running": [[1, prompt_id, {}, {}, []]], "queue_pending": []}
    assert resolve_status(prompt_id, history, queue).state is PromptState.SUCCESS
    assert resolve_status(prompt_id, {}, queue).state is PromptState.RUNNING


def test_queue_delete_pending_and_running():
    steps = transcript("queue_delete_pending")["steps"]
    deleted = steps[3]["request"]["json"]["delete"][0]
    queue_after = steps[4]["response"]["body"]
    assert resolve_status(deleted, response_body("history_deleted_pending"), queue_after).state is (
        PromptState.NOT_FOUND
    )
    running = steps[0]["response"]["body"]["prompt_id"]
    assert resolve_status(running, {}, queue_after).state is PromptState.RUNNING

    steps = transcript("queue_delete_running")["steps"]
    running = steps[0]["request"]["json"]["delete"][0]
    assert resolve_status(running, {}, steps[1]["response"]["body"]).state is PromptState.RUNNING
    assert resolve_status(running, steps[2]["response"]["body"], EMPTY_QUEUE).state is PromptState.SUCCESS


def test_queue_clear_keeps_the_running_prompt():
    steps = transcript("queue_clear")["steps"]
    queue_after = steps[4]["response"]["body"]
    ids = [steps[i]["response"]["body"]["prompt_id"] for i in range(3)]
    assert resolve_status(ids[0], {}, queue_after).state is PromptState.RUNNING
    assert [resolve_status(p, {}, queue_after).state for p in ids[1:]] == [PromptState.NOT_FOUND] * 2


def test_restart_loses_every_prompt():
    steps = transcript("restart")["steps"]
    by_note = {s.get("note"): s for s in steps}
    queue_before = by_note["before restart"]["response"]["body"]
    queue_after = by_note["queue after restart"]["response"]["body"]
    running = by_note["running at restart"]["response"]["body"]["prompt_id"]
    pending = by_note["pending at restart"]["response"]["body"]["prompt_id"]
    completed = by_note["completed before restart"]["response"]["body"]["prompt_id"]
    assert resolve_status(running, {}, queue_before).state is PromptState.RUNNING
    assert resolve_status(pending, {}, queue_before).state is PromptState.PENDING
    for prompt_id, note in (
        (completed, "completed prompt after restart"),
        (running, "running-at-restart prompt"),
        (pending, "pending-at-restart prompt"),
    ):
        assert resolve_status(prompt_id, by_note[note]["response"]["body"], queue_after).state is (
            PromptState.NOT_FOUND
        )


def test_status_error_without_message_is_still_an_error():
    body = {"p": {"status": {"status_str": "error", "completed": False, "messages": []}, "outputs": {}}}
    status = status_from_history("p", body)
    assert (
        status.state is PromptState.ERROR
        and "without an error message" in status.failure["exception_message"]
    )


def test_malformed_messages_and_queue_items_are_ignored():
    body = {
        "p": {"status": {"status_str": "success", "messages": [["only-one"], "junk", None]}, "outputs": None}
    }
    status = status_from_history("p", body)
    assert status.state is PromptState.SUCCESS and status.messages == () and status.outputs == ()
    queue = {"queue_running": [["x"], None, [1, 2]], "queue_pending": [[None, "p", {}, {}, []], "junk"]}
    assert status_from_queue("p", queue).state is PromptState.PENDING
    assert status_from_queue("p", "not a dict") is None
    assert queue_ids(None) == ([], [])


def test_state_properties():
    assert {s for s in PromptState if s.is_terminal} == {
        PromptState.SUCCESS,
        PromptState.ERROR,
        PromptState.INTERRUPTED,
    }
    assert {s for s in PromptState if s.is_active} == {PromptState.PENDING, PromptState.RUNNING}
    assert not PromptState.NOT_FOUND.is_terminal and not PromptState.NOT_FOUND.is_active

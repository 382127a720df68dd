"""Contract: the history entries of finished prompts, and /history listing, delete and clear."""

from __future__ import annotations

import pytest

from .checks import assert_queue_empty_of_others, check_entry, check_response, recorded_prompt, workflow
from .clients import Comfy
from .conftest import Server
from .shapes import load, media_type, token

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize(
    ("name", "workflow_name"),
    [
        ("history_preview", "preview_temp"),
        ("history_batch", "batch_of_3"),
        ("history_text_output", "text_output"),
    ],
)
def test_history_outputs(comfy: Comfy, name: str, workflow_name: str) -> None:
    steps = load(name)["steps"]
    body = check_response(
        steps[0]["response"], comfy.replay(steps[0]["request"], json={"prompt": workflow(workflow_name)})
    )
    entry = comfy.wait_history(body["prompt_id"])
    check_entry(steps[1]["response"]["body"], entry, body["prompt_id"], name)
    outputs = next(iter(entry["outputs"].values()))
    if name == "history_batch":
        assert len(outputs["images"]) == 3
    elif name == "history_preview":
        assert [i["type"] for i in outputs["images"]] == ["temp"]
    else:
        assert outputs == {"text": ["320"]}


def test_history_error_corrupt_image(comfy: Comfy) -> None:
    steps = load("history_error_corrupt_image")["steps"]
    name = f"broken_{token()}.png"
    upload = comfy.post(
        "/upload/image",
        files={"image": (name, b"this is not a png", "image/png")},
        data={"type": "input", "subfolder": "contract", "overwrite": "true"},
    )
    check_response(steps[0]["response"], upload, {"broken.png": name})
    assert upload.json() == {"name": name, "subfolder": "contract", "type": "input"}
    prompt = recorded_prompt(steps[1]["request"])
    prompt["1"]["inputs"]["image"] = f"contract/{name}"
    body = check_response(steps[1]["response"], comfy.replay(steps[1]["request"], json={"prompt": prompt}))
    entry = comfy.wait_history(body["prompt_id"])
    check_entry(steps[2]["response"]["body"], entry, body["prompt_id"], "corrupt image history")
    assert entry["status"]["messages"][-1][1]["exception_type"] == "PIL.UnidentifiedImageError"


def test_history_listing_max_items_offset(comfy: Comfy) -> None:
    ids = [comfy.submit(workflow("empty_save"))["prompt_id"] for _ in range(2)]
    for prompt_id in ids:
        comfy.wait_history(prompt_id)
    done = load("history_done")["response"]["body"]
    for _ in range(5):  # another client may finish a prompt between the requests: retry
        all_before = comfy.get("/history")
        newest = comfy.get("/history", params={"max_items": "2"})
        oldest = comfy.get("/history", params={"max_items": "1", "offset": "0"})
        all_after = comfy.get("/history")
        if list(all_before.json()) == list(all_after.json()):
            break
    assert all_before.status_code == 200 and media_type(all_before.headers) == "application/json"
    history = all_before.json()
    keys = list(history)
    assert keys.index(ids[0]) < keys.index(ids[1]), "GET /history is not in insertion order"
    for prompt_id in ids:
        check_entry(done, history[prompt_id], prompt_id, "GET /history entry")
    assert newest.status_code == load("history_max_items")["response"]["status"]
    assert list(newest.json()) == keys[-2:], "max_items alone must return the newest N"
    assert oldest.status_code == load("history_offset")["response"]["status"]
    assert list(oldest.json()) == keys[:1], "max_items=1&offset=0 must return the oldest"


def test_history_delete(comfy: Comfy) -> None:
    steps = load("history_delete")["steps"]
    prompt_id = comfy.submit(workflow("empty_save"))["prompt_id"]
    comfy.wait_history(prompt_id)
    rec_id = steps[0]["request"]["json"]["delete"][0]
    check_response(steps[0]["response"], comfy.replay(steps[0]["request"], json={"delete": [prompt_id]}))
    check_response(
        steps[1]["response"],
        comfy.replay(steps[1]["request"], path=f"/history/{prompt_id}"),
        {rec_id: prompt_id},
    )
    assert comfy.history(prompt_id) == {}


def test_history_clear(comfy: Comfy, contract_server: Server) -> None:
    steps = load("history_clear")["steps"]
    prompt_id = comfy.submit(workflow("empty_save"))["prompt_id"]
    comfy.wait_history(prompt_id)
    assert_queue_empty_of_others(comfy, contract_server)
    check_response(steps[0]["response"], comfy.replay(steps[0]["request"]))
    check_response(steps[1]["response"], comfy.replay(steps[1]["request"]))
    assert comfy.history(prompt_id) == {}

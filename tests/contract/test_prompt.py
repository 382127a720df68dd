"""Contract: POST /prompt, rejected (the recorded errors) and accepted (number, client_id, prompt_id, front)."""

from __future__ import annotations

import copy
import uuid

import pytest

from .checks import check_entry, check_response, recorded_prompt, workflow
from .clients import Comfy
from .shapes import load, token

pytestmark = pytest.mark.timeout(240)

# --------------------------------------------------------------------------------------------------
# POST /prompt: rejected

REJECTED = [
    "prompt_err_not_json",
    "prompt_err_prompt_not_object",
    "prompt_err_no_prompt_key",
    "prompt_err_empty_prompt",
    "prompt_err_no_output_node",
    "prompt_err_missing_class_type",
    "prompt_err_unknown_class_type",
    "prompt_err_missing_input",
    "prompt_err_link_nonexistent_node",
    "prompt_err_link_bad_slot",
    "prompt_err_link_bad_shape",
    "prompt_err_type_mismatch",
    "prompt_err_value_too_big",
    "prompt_err_value_too_small",
    "prompt_err_invalid_input_type",
    "prompt_err_bad_combo",
    "prompt_err_loadimage_missing_file",
    "prompt_err_origin_mismatch",
]


@pytest.mark.parametrize("name", REJECTED)
def test_prompt_rejected(comfy: Comfy, name: str) -> None:
    rec = load(name)
    request = copy.deepcopy(rec["request"])
    mapping: dict[str, str] = {}
    if name == "prompt_err_loadimage_missing_file":
        missing = f"does-not-exist-{token()}.png"
        request["json"]["prompt"]["1"]["inputs"]["image"] = missing
        mapping["does-not-exist.png"] = missing
    response = comfy.replay(request)
    body = check_response(rec["response"], response, mapping, what=name)
    expected = rec["response"]["body"]
    if isinstance(expected, dict) and "error" in expected:
        assert body["error"]["type"] == expected["error"]["type"]
        assert body["error"]["message"] == expected["error"]["message"]
        if expected["error"]["type"] in ("invalid_prompt", "no_prompt"):
            assert body["error"]["details"] == expected["error"]["details"]
        else:  # details only name the output node's own problems
            assert bool(body["error"]["details"]) == bool(expected["error"]["details"]), body["error"]
        assert sorted(body["node_errors"]) == sorted(expected["node_errors"])
        for node_id, node_error in expected["node_errors"].items():
            got = [e["type"] for e in body["node_errors"][node_id]["errors"]]
            assert got == [e["type"] for e in node_error["errors"]], f"{name}: node {node_id}: {got}"


# --------------------------------------------------------------------------------------------------
# POST /prompt: accepted, and the history entries


def test_prompt_ok_and_history_done(comfy: Comfy) -> None:
    rec = load("prompt_ok")
    response = comfy.replay(rec["request"], json={"prompt": workflow("empty_save")})
    body = check_response(rec["response"], response)
    assert body["node_errors"] == {}
    entry = comfy.wait_history(body["prompt_id"])
    check_entry(load("history_done")["response"]["body"], entry, body["prompt_id"], "history_done")
    assert entry["prompt"][3] == {} and entry["prompt"][4] == ["2"]
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True


def test_prompt_ok_client_id(comfy: Comfy) -> None:
    rec = load("prompt_ok_client_id")
    client_id = f"contract-{token()}"
    response = comfy.replay(rec["request"], json={"prompt": workflow("empty_save"), "client_id": client_id})
    body = check_response(rec["response"], response)
    entry = comfy.wait_history(body["prompt_id"])
    assert entry["prompt"][3] == {"client_id": client_id}


def test_prompt_ok_prompt_id_reused(comfy: Comfy) -> None:
    rec = load("prompt_ok_prompt_id")["steps"]
    ours_id = str(uuid.uuid4())
    rec_id = rec[0]["request"]["json"]["prompt_id"]
    mapping = {rec_id: ours_id}
    prompt = workflow("empty_save")
    first = check_response(
        rec[0]["response"],
        comfy.replay(rec[0]["request"], json={"prompt": prompt, "prompt_id": ours_id}),
        mapping,
    )
    assert first["prompt_id"] == ours_id
    entry = comfy.wait_history(ours_id)
    check_entry(rec[1]["response"]["body"], entry, ours_id, "history under the client's id")
    assert entry["prompt"][0] == first["number"]
    prompt2 = workflow("empty_save")
    second = check_response(
        rec[2]["response"],
        comfy.replay(rec[2]["request"], json={"prompt": prompt2, "prompt_id": ours_id}),
        mapping,
    )
    assert second["prompt_id"] == ours_id
    comfy.wait_until(
        "the second run replaced the history entry",
        lambda: comfy.history(ours_id).get(ours_id, {}).get("prompt", [None])[0] == second["number"],
    )
    history = check_response(rec[3]["response"], comfy.get(f"/history/{ours_id}"), mapping)
    assert list(history) == [ours_id]
    assert history[ours_id]["prompt"][2] == prompt2


def test_prompt_ok_front(comfy: Comfy) -> None:
    rec = load("prompt_ok_front")
    # number = -counter; on a fresh server the counter is 0 (and -0 == 0): submit one prompt first
    comfy.submit(workflow("empty_save"))
    response = comfy.replay(rec["request"], json={"prompt": workflow("empty_save"), "front": True})
    body = check_response(rec["response"], response)
    assert body["number"] < 0
    comfy.wait_history(body["prompt_id"])


def test_prompt_ok_partial_node_errors(comfy: Comfy) -> None:
    steps = load("prompt_ok_partial_node_errors")["steps"]
    request = steps[0]["request"]
    response = comfy.replay(request, json={"prompt": recorded_prompt(request)})
    body = check_response(steps[0]["response"], response)
    assert list(body["node_errors"]) == ["3"]
    assert [e["type"] for e in body["node_errors"]["3"]["errors"]] == ["exception_during_validation"]
    entry = comfy.wait_history(body["prompt_id"])
    check_entry(steps[1]["response"]["body"], entry, body["prompt_id"], "partial node_errors history")
    assert list(entry["outputs"]) == ["2"] and entry["prompt"][4] == ["2"]


def test_prompt_ok_runtime_error_and_history_error(comfy: Comfy) -> None:
    rec = load("prompt_ok_runtime_error")
    response = comfy.replay(rec["request"], json={"prompt": workflow("runtime_error")})
    body = check_response(rec["response"], response)
    assert body["node_errors"] == {}
    entry = comfy.wait_history(body["prompt_id"])
    check_entry(load("history_error")["response"]["body"], entry, body["prompt_id"], "history_error")
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["outputs"] == {}
    event, data = entry["status"]["messages"][-1]
    assert event == "execution_error" and data["node_id"] == "2" and data["exception_type"] == "RuntimeError"

"""POST /prompt on the stand-in answers like the recorded ComfyUI 0.3.64."""

from __future__ import annotations

import copy

import pytest
import requests
from contract_data import without_tracebacks
from standin_helpers import gated, history, load_transcript, run, submit

REJECTED = [
    "prompt_err_bad_combo",
    "prompt_err_empty_prompt",
    "prompt_err_invalid_input_type",
    "prompt_err_link_bad_shape",
    "prompt_err_link_bad_slot",
    "prompt_err_link_nonexistent_node",
    "prompt_err_loadimage_missing_file",
    "prompt_err_missing_class_type",
    "prompt_err_missing_input",
    "prompt_err_no_output_node",
    "prompt_err_no_prompt_key",
    "prompt_err_type_mismatch",
    "prompt_err_unknown_class_type",
    "prompt_err_value_too_big",
    "prompt_err_value_too_small",
]


@pytest.mark.parametrize("name", REJECTED)
def test_rejections_match_the_transcripts(standin, name: str) -> None:
    record = load_transcript(name)
    response = requests.post(standin.url + "/prompt", json=record["request"]["json"], timeout=10)
    assert response.status_code == record["response"]["status"] == 400
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert without_tracebacks(response.json()) == without_tracebacks(record["response"]["body"])
    assert standin.submissions == []


@pytest.mark.parametrize("name", ["prompt_err_not_json", "prompt_err_prompt_not_object"])
def test_malformed_bodies_are_500_text(standin, name: str) -> None:
    record = load_transcript(name)
    request = record["request"]
    if "raw_body" in request:
        response = requests.post(standin.url + "/prompt", data=request["raw_body"], timeout=10)
    else:
        response = requests.post(standin.url + "/prompt", json=request["json"], timeout=10)
    assert response.status_code == 500
    assert response.headers["Content-Type"] == record["response"]["headers"]["Content-Type"]
    assert response.text == record["response"]["body"]


def test_origin_mismatch_is_403_empty(standin) -> None:
    record = load_transcript("prompt_err_origin_mismatch")
    response = requests.post(
        standin.url + "/prompt",
        json=record["request"]["json"],
        headers={"Origin": "http://evil.example"},
        timeout=10,
    )
    assert (response.status_code, response.content) == (403, b"")
    same = requests.post(
        standin.url + "/prompt", json=record["request"]["json"], headers={"Origin": standin.url}, timeout=10
    )
    assert same.status_code == 200


def test_accepted_prompt_shape_counter_and_front(standin, contract_workflows) -> None:
    first = submit(standin, contract_workflows["empty_save"])
    assert set(first) == {"prompt_id", "number", "node_errors"}
    assert first["number"] == 0 and first["node_errors"] == {}
    requests.post(standin.url + "/prompt", json={"client_id": "x"}, timeout=10)  # a 400 still counts
    front = submit(standin, contract_workflows["empty_save"], front=True)
    assert front["number"] == -2
    assert standin.submissions == [first["prompt_id"], front["prompt_id"]]


def test_client_prompt_id_is_used_and_reuse_replaces_history(standin, contract_workflows) -> None:
    workflow = copy.deepcopy(contract_workflows["empty_save"])
    entry = run(standin, workflow, prompt_id="my-id", client_id="c1")
    assert entry["prompt"][1] == "my-id" and entry["prompt"][3] == {"client_id": "c1"}
    workflow["1"]["inputs"]["color"] = 123
    second = submit(standin, workflow, prompt_id="my-id")
    assert second["prompt_id"] == "my-id"
    standin.wait_idle(30)
    body = history(standin, "my-id")
    assert list(body) == ["my-id"]
    assert body["my-id"]["prompt"][0] == second["number"]
    assert (
        body["my-id"]["outputs"]["2"]["images"][0]["filename"]
        != entry["outputs"]["2"]["images"][0]["filename"]
    )


def test_partial_node_errors_run_only_the_valid_output(standin) -> None:
    record = load_transcript("prompt_ok_partial_node_errors")["steps"]
    response = requests.post(standin.url + "/prompt", json=record[0]["request"]["json"], timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert without_tracebacks({"node_errors": body["node_errors"]}) == without_tracebacks(
        {"node_errors": record[0]["response"]["body"]["node_errors"]}
    )
    standin.wait_idle(30)
    entry = history(standin, body["prompt_id"])[body["prompt_id"]]
    assert entry["prompt"][4] == ["2"]
    assert list(entry["outputs"]) == ["2"]


def test_get_prompt_counts_running_and_pending(standin, contract_workflows) -> None:
    assert requests.get(standin.url + "/prompt", timeout=10).json() == {"exec_info": {"queue_remaining": 0}}
    for _ in range(3):  # held in a gate: none can finish before the count is read
        submit(standin, gated(contract_workflows["long_about_10s"], "10"), client_id="x")
    assert requests.get(standin.url + "/api/prompt", timeout=10).json() == {
        "exec_info": {"queue_remaining": 3}
    }
    requests.post(standin.url + "/queue", json={"clear": True}, timeout=10)
    requests.post(standin.url + "/interrupt", timeout=10)
    standin.gates.release("gate")
    standin.wait_idle(30)

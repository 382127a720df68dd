"""Every recorded workflow runs on the stand-in with the recorded output shapes; stand-in-only nodes."""

from __future__ import annotations

import re
import time

import pytest
import requests
from standin_helpers import load_transcript, png_bytes, run, submit, upload

NAME = re.compile(r"^(?P<stem>.+)_(?P<n>\d{5})_\.png$")


def _shape(outputs: dict) -> dict:
    """Outputs with volatile names reduced to their stem (counters and temp suffixes differ)."""
    shaped = {}
    for node, ui in outputs.items():
        if "images" in ui:
            shaped[node] = [
                (
                    re.sub(r"^ComfyUI_temp_[a-z]{5}$", "ComfyUI_temp", NAME.match(i["filename"])["stem"]),
                    i["subfolder"],
                    i["type"],
                )
                for i in ui["images"]
            ]
        else:
            shaped[node] = ui
    return shaped


RECORDED = {
    "empty_save": ("history_done", None),
    "preview_temp": ("history_preview", 1),
    "batch_of_3": ("history_batch", 1),
    "text_output": ("history_text_output", 1),
}


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_output_shapes_match_history(standin, contract_workflows, name: str) -> None:
    transcript, step = RECORDED[name]
    record = load_transcript(transcript)
    body = record["response"]["body"] if step is None else record["steps"][step]["response"]["body"]
    recorded = next(iter(body.values()))
    entry = run(standin, contract_workflows[name])
    assert entry["status"]["status_str"] == "success"
    assert _shape(entry["outputs"]) == _shape(recorded["outputs"])
    assert entry["meta"] == recorded["meta"]


def test_every_workflow_runs(standin, contract_workflows) -> None:
    upload(standin, "contract_upload.png", png_bytes(), subfolder="contract", overwrite="true")
    outcome = {}
    for name, workflow in contract_workflows.items():
        outcome[name] = run(standin, workflow)["status"]["status_str"]
    expected = {name: "success" for name in contract_workflows}
    expected["runtime_error"] = "error"
    assert outcome == expected


def test_save_counter_continues_from_disk(standin, contract_workflows) -> None:
    folder = standin.base_dir / "output" / "contract"
    folder.mkdir(parents=True)
    (folder / "empty_00041_.png").write_bytes(b"")
    entry = run(standin, contract_workflows["empty_save"])
    assert entry["outputs"]["2"]["images"][0]["filename"] == "empty_00042_.png"


def test_save_outside_output_fails(standin, contract_workflows) -> None:
    workflow = {**contract_workflows["empty_save"]}
    workflow["2"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["1", 0], "filename_prefix": "../escape"},
    }
    entry = run(standin, workflow)
    assert entry["status"]["status_str"] == "error"
    assert not (standin.base_dir / "escape_00001_.png").exists()


def _chain(middle: dict) -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 7}},
        "2": middle,
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "chain"}},
    }


def test_unrunnable_class_is_an_execution_error(standin) -> None:
    sharpen = {
        "class_type": "ImageSharpen",
        "inputs": {"image": ["1", 0], "sharpen_radius": 1, "sigma": 1.0, "alpha": 1.0},
    }
    entry = run(standin, _chain(sharpen))
    event, data = entry["status"]["messages"][-1]
    assert event == "execution_error"
    assert data["exception_message"] == "the stand-in server cannot run ImageSharpen\n"


def test_stand_in_fail(standin) -> None:
    entry = run(
        standin, _chain({"class_type": "StandInFail", "inputs": {"image": ["1", 0], "message": "boom"}})
    )
    _event, data = entry["status"]["messages"][-1]
    assert (data["node_type"], data["exception_type"], data["exception_message"]) == (
        "StandInFail",
        "RuntimeError",
        "boom\n",
    )


def test_stand_in_delay_reports_progress_and_is_interruptible(standin, ws_factory) -> None:
    ws = ws_factory("me")
    delay = {"class_type": "StandInDelay", "inputs": {"image": ["1", 0], "seconds": 20.0, "steps": 100}}
    prompt_id = submit(standin, _chain(delay), client_id="me")["prompt_id"]
    ws.until(lambda t, d: t == "progress" and d["value"] == 2)
    requests.post(standin.url + "/interrupt", timeout=10)
    ws.until_end(prompt_id, timeout=30)
    event = next(d for t, d in ws.messages if t == "execution_interrupted")
    assert event["node_id"] == "2" and event["executed"] == ["1"]
    progress = [d for t, d in ws.messages if t == "progress"]
    assert progress[0] == {"value": 1, "max": 100, "prompt_id": prompt_id, "node": "2"}
    assert progress[-1]["value"] < 100  # stopped inside the node, at a progress report


def _gate(name: str = "g", **inputs: object) -> dict:
    return {"class_type": "StandInGate", "inputs": {"image": ["1", 0], "gate": name, **inputs}}


def test_gate_holds_the_run_until_released(standin) -> None:
    prompt_id = submit(standin, _chain(_gate()))["prompt_id"]
    standin.gates.wait_blocked("g")
    assert standin.gates.blocked("g") == 1
    assert requests.get(f"{standin.url}/history/{prompt_id}", timeout=10).json() == {}
    assert [i[1] for i in requests.get(standin.url + "/queue", timeout=10).json()["queue_running"]] == [
        prompt_id
    ]
    standin.gates.release("g")
    standin.wait_idle(30)
    assert standin.gates.blocked("g") == 0
    entry = requests.get(f"{standin.url}/history/{prompt_id}", timeout=10).json()[prompt_id]
    assert entry["status"]["status_str"] == "success" and entry["outputs"]["3"]["images"]
    again = run(standin, _chain(_gate()))  # a released gate stays open
    assert again["status"]["status_str"] == "success"


def test_closed_gate_blocks_again_and_other_gates_are_independent(standin) -> None:
    standin.gates.release("g")
    standin.gates.close("g")
    submit(standin, _chain(_gate()))
    standin.gates.wait_blocked("g")
    with pytest.raises(TimeoutError, match="'other'"):
        standin.gates.wait_blocked("other", timeout=0.1)
    standin.gates.release("g")
    standin.wait_idle(30)


def test_gate_never_released_fails_the_prompt_after_its_timeout(standin) -> None:
    entry = run(standin, _chain(_gate(timeout=0.2)))
    _event, data = entry["status"]["messages"][-1]
    assert (data["node_id"], data["exception_type"]) == ("2", "TimeoutError")
    assert "'g' was not released within 0.2 s" in data["exception_message"]


def test_stopping_the_server_ends_a_blocked_gate(tmp_path) -> None:
    from airflow_comfy.testing import StandInServer

    server = StandInServer(base_dir=tmp_path / "gated").start()
    try:
        submit(server, _chain(_gate(timeout=3600.0)))
        server.gates.wait_blocked("g")
    finally:
        server.stop()  # returns: the worker leaves the gate when the server stops
    assert server.gates.blocked("g") == 0


def test_stand_in_delay_is_never_cached(standin) -> None:
    workflow = _chain(
        {"class_type": "StandInDelay", "inputs": {"image": ["1", 0], "seconds": 0.0, "steps": 1}}
    )
    run(standin, workflow)
    again = run(standin, workflow)
    cached = next(d for e, d in again["status"]["messages"] if e == "execution_cached")["nodes"]
    assert cached == ["1"]


def test_node_delays_slow_a_class(slow_standin, contract_workflows) -> None:
    started = time.monotonic()
    run(slow_standin, contract_workflows["scale_blur_save"])
    assert time.monotonic() - started >= 0.3

"""Contract tests: replay the requests recorded from a real ComfyUI 0.3.64 and compare the answers.

Every test runs twice: against the stand-in server (``[standin]``) and against the real ComfyUI named
by COMFYUI_URL (``[live]``, skipped when unset). Status codes, content types and body *shapes* are
compared with the recordings in tests/data/comfyui-0.3.64; volatile values are not (see shapes.py).

The tests keep to their own prompts so that they can run against a shared live server: unique ids,
prefixes and file names, bounded waits, our own prompts interrupted or deleted at the end, and the
operations that would disturb other clients (queue/history clear, global interrupt) only run when
the server's queue holds nothing but ours.
"""

from __future__ import annotations

import copy
import random
import time
import uuid
from typing import Any

import pytest
import requests

from .conftest import Server
from .shapes import (
    STABLE_KEYS,
    Comfy,
    Message,
    Socket,
    assert_shape,
    collapse,
    is_subsequence,
    keys_by_type,
    load,
    media_type,
    ours,
    rebind,
    recorded_messages,
    shape_diff,
    tiny_png,
    token,
    workflows,
)

pytestmark = pytest.mark.timeout(240)

WORKFLOWS = workflows()


# --------------------------------------------------------------------------------------------------
# helpers


def workflow(name: str, tag: str | None = None) -> dict[str, Any]:
    """A copy of a recorded workflow with a random EmptyImage colour and a unique filename prefix."""
    prompt = copy.deepcopy(WORKFLOWS[name])
    tag = tag or token()
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "EmptyImage":
            inputs["color"] = random.randint(0, 0xFFFFFF)
        prefix = inputs.get("filename_prefix")
        if isinstance(prefix, str) and prefix.startswith("contract/"):
            inputs["filename_prefix"] = f"contract/{tag}_{prefix.split('/', 1)[1]}"
    return prompt


def recorded_prompt(request: dict[str, Any]) -> dict[str, Any]:
    """The prompt of a recorded POST /prompt, with fresh colours (so nodes really execute)."""
    prompt = copy.deepcopy(request["json"]["prompt"])
    for node in prompt.values():
        if node.get("class_type") == "EmptyImage":
            node["inputs"]["color"] = random.randint(0, 0xFFFFFF)
    return prompt


def only_entry(history: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    assert len(history) == 1, f"expected one history entry, got {list(history)}"
    return next(iter(history.items()))


def check_response(
    recorded: dict[str, Any],
    response: requests.Response,
    mapping: dict[str, str] | None = None,
    what: str = "",
) -> Any:
    """Compare status, content type and body shape with a recorded response; return the parsed body."""
    what = what or f"{response.request.method} {response.request.path_url}"
    assert response.status_code == recorded["status"], (
        f"{what}: status {response.status_code} != {recorded['status']}; body {response.text[:300]!r}"
    )
    rec_type = media_type(recorded["headers"])
    if rec_type is not None:
        assert media_type(response.headers) == rec_type, f"{what}: Content-Type {response.headers}"
    body = recorded["body"]
    if body == "":
        assert response.content == b"", f"{what}: expected an empty body, got {response.content[:200]!r}"
        return None
    if isinstance(body, str):
        assert response.text == body, f"{what}: text body {response.text[:200]!r} != {body!r}"
        return response.text
    if isinstance(body, dict) and body.get("_binary"):
        data = response.content
        expected_head = bytes.fromhex(body["first_bytes_hex"])
        # bytes 4..8 of a RIFF/WebP file are its length, a volatile value
        assert data[:4] == expected_head[:4] and data[8:12] == expected_head[8:12], (
            f"{what}: binary starts {data[:16].hex()}, recorded {body['first_bytes_hex']}"
        )
        assert int(response.headers["Content-Length"]) == len(data)
        if "Content-Disposition" in recorded["headers"]:
            disposition = recorded["headers"]["Content-Disposition"]
            for old, new in (mapping or {}).items():
                disposition = disposition.replace(f'"{old}"', f'"{new}"')
            assert response.headers.get("Content-Disposition") == disposition, what
        return data
    actual = response.json()
    assert_shape(rebind(body, mapping or {}), actual, what)
    return actual


def check_queue(
    recorded: dict[str, Any], response: requests.Response, mapping: dict[str, str]
) -> dict[str, Any]:
    """GET /queue: top-level shape, then every recorded item (ids mapped to ours) against our item."""
    empty = {"queue_running": [], "queue_pending": []}
    body = check_response({**recorded, "body": empty}, response, what="GET /queue")
    for key in ("queue_running", "queue_pending"):
        for rec_item in recorded["body"][key]:
            prompt_id = mapping.get(rec_item[1], rec_item[1])
            got = [item for item in body[key] if item[1] == prompt_id]
            assert len(got) == 1, f"GET /queue: {prompt_id} not once in {key}: {[i[1] for i in body[key]]}"
            assert_shape(rebind(rec_item, mapping), got[0], f"GET /queue {key} item")
    return body


def recorded_entry(history_body: dict[str, Any], prompt_id: str) -> dict[str, Any]:
    """The single recorded history entry, re-keyed to ``prompt_id``."""
    rec_id, entry = only_entry(history_body)
    return rebind(entry, {rec_id: prompt_id})


TIMING_KEYS = frozenset({"node_id", "node_type", "state"})  # where an interrupt lands depends on timing


def check_entry(
    recorded_history: dict[str, Any],
    entry: dict[str, Any],
    prompt_id: str,
    what: str,
    stable: frozenset[str] = STABLE_KEYS,
) -> None:
    expected = recorded_entry(recorded_history, prompt_id)
    assert_shape(expected, entry, what, stable)
    assert [m[0] for m in entry["status"]["messages"]] == [m[0] for m in expected["status"]["messages"]], what


def assert_queue_empty_of_others(comfy: Comfy, server: Server) -> None:
    """Skip a live test whose next step would disturb another client's prompts."""
    if not server.live:
        return
    running, pending = comfy.queue_ids()
    foreign = [p for p in running + pending if p not in comfy.submitted]
    if foreign:
        pytest.skip(f"the live server runs other clients' prompts {foreign}: not clearing/interrupting")


def wait_idle_or_skip(comfy: Comfy, server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running, pending = comfy.queue_ids()
        if not running and not pending:
            return
        time.sleep(0.1)
    if server.live:
        pytest.skip("the live server stayed busy: cannot test on an idle server")
    raise AssertionError("the stand-in stayed busy")


def long_timeout(server: Server) -> float:
    return server.blur_seconds * 8 + 60


# --------------------------------------------------------------------------------------------------
# server info


@pytest.mark.parametrize(
    "name",
    [
        "system_stats",
        "prompt_get",
        "embeddings",
        "models",
        "models_checkpoints",
        "models_unknown_folder",
        "object_info_SaveImage",
        "object_info_ImageBlur",
        "object_info_NoSuchNode",
        "api_prefix",
        "unknown_route",
        "history_unknown",
        "history_bad_max_items",
        "free_no_body",
    ],
)
def test_simple_request(comfy: Comfy, name: str) -> None:
    rec = load(name)
    check_response(rec["response"], comfy.replay(rec["request"]), what=name)


def test_system_stats_values(comfy: Comfy) -> None:
    body = comfy.get("/system_stats").json()
    assert (
        body["system"]["comfyui_version"]
        == load("system_stats")["response"]["body"]["system"]["comfyui_version"]
    )
    assert all(isinstance(a, str) for a in body["system"]["argv"])


def test_features(comfy: Comfy) -> None:
    rec = load("features")
    response = comfy.replay(rec["request"])
    check_response(rec["response"], response)
    assert response.json() == rec["response"]["body"]


def test_models_lists_checkpoints(comfy: Comfy) -> None:
    body = comfy.get("/models").json()
    assert "checkpoints" in body and set(body) <= set(load("models")["response"]["body"]) | set(body)


def test_object_info_covers_workflow_nodes(comfy: Comfy) -> None:
    rec = load("object_info")
    response = comfy.get("/object_info")
    assert response.status_code == 200
    body = response.json()
    classes = {node["class_type"] for prompt in WORKFLOWS.values() for node in prompt.values()}
    for cls in sorted(classes):
        assert cls in body, f"/object_info lacks {cls}"
        assert_shape(rec["response"]["body"][cls], body[cls], f"/object_info[{cls}]")


def test_object_info_unknown_node_is_empty(comfy: Comfy) -> None:
    response = comfy.get("/object_info/NoSuchNode")
    assert response.status_code == 200 and response.json() == {}


def test_api_prefix_serves_every_route(comfy: Comfy) -> None:
    unknown = str(uuid.uuid4())
    assert comfy.get(f"/api/history/{unknown}").json() == {}
    assert comfy.get("/api/object_info/NoSuchNode").json() == {}
    assert set(comfy.get("/api/queue").json()) == {"queue_running", "queue_pending"}
    assert comfy.get("/api/features").json() == load("features")["response"]["body"]
    body = comfy.submit(workflow("empty_save"))
    response = comfy.get(f"/api/history/{body['prompt_id']}")
    assert response.status_code == 200
    comfy.wait_history(body["prompt_id"])


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


# --------------------------------------------------------------------------------------------------
# queue, interrupt, free (the slow server: `long_about_10s` runs long enough to be observed)


def test_busy_queue_prompt_and_history(slow_comfy: Comfy, slow_server: Server) -> None:
    comfy = slow_comfy
    long_id = comfy.submit(workflow("long_about_10s"))["prompt_id"]
    pending = [comfy.submit(workflow("empty_save"))["prompt_id"] for _ in range(2)]
    comfy.wait_running(long_id)

    busy = check_response(load("prompt_get_busy")["response"], comfy.get("/prompt"))
    remaining = busy["exec_info"]["queue_remaining"]
    assert remaining == 3 if not slow_server.live else remaining >= 3, busy

    rec_queue = load("queue_busy")["response"]
    rec_pending = [item[1] for item in rec_queue["body"]["queue_pending"]]
    mapping = {
        rec_queue["body"]["queue_running"][0][1]: long_id,
        **dict(zip(rec_pending, pending, strict=True)),
    }
    queue = check_queue(rec_queue, comfy.get("/queue"), mapping)
    assert [item[1] for item in queue["queue_running"]] == [long_id]
    for item in queue["queue_pending"]:
        if item[1] in pending:
            assert item[4] == ["2"]

    check_response(load("history_running")["response"], comfy.get(f"/history/{long_id}"))
    check_response(load("history_pending")["response"], comfy.get(f"/history/{pending[0]}"))
    assert comfy.history(long_id) == {} and comfy.history(pending[0]) == {}

    comfy.interrupt(long_id)
    for prompt_id in pending:
        assert comfy.wait_history(prompt_id, long_timeout(slow_server))["status"]["status_str"] == "success"


def test_queue_delete_pending(slow_comfy: Comfy, slow_server: Server) -> None:
    comfy = slow_comfy
    steps = load("queue_delete_pending")["steps"]
    long_id = comfy.submit(workflow("long_about_10s"))["prompt_id"]
    doomed = comfy.submit(workflow("empty_save"))["prompt_id"]
    kept = comfy.submit(workflow("empty_save"))["prompt_id"]
    comfy.wait_running(long_id)
    check_response(steps[3]["response"], comfy.replay(steps[3]["request"], json={"delete": [doomed]}))
    rec_ids = [steps[i]["response"]["body"]["prompt_id"] for i in range(3)]
    queue = check_queue(
        steps[4]["response"], comfy.get("/queue"), dict(zip(rec_ids, [long_id, doomed, kept], strict=True))
    )
    running, pending = [i[1] for i in queue["queue_running"]], [i[1] for i in queue["queue_pending"]]
    assert long_id in running and kept in pending and doomed not in pending and doomed not in running
    comfy.interrupt(long_id)
    assert comfy.wait_history(kept, long_timeout(slow_server))["status"]["status_str"] == "success"
    check_response(load("history_deleted_pending")["response"], comfy.get(f"/history/{doomed}"))
    assert comfy.history(doomed) == {}


def test_queue_delete_running_is_a_noop(slow_comfy: Comfy, slow_server: Server) -> None:
    comfy = slow_comfy
    steps = load("queue_delete_running")["steps"]
    long_id = comfy.submit(workflow("long_about_10s"))["prompt_id"]
    comfy.wait_running(long_id)
    check_response(steps[0]["response"], comfy.replay(steps[0]["request"], json={"delete": [long_id]}))
    rec_queue = steps[1]["response"]
    rec_running = rec_queue["body"]["queue_running"]
    only_running = {**rec_queue, "body": {"queue_running": rec_running, "queue_pending": []}}
    queue = check_queue(only_running, comfy.get("/queue"), {rec_running[0][1]: long_id})
    assert long_id in [i[1] for i in queue["queue_running"]], "deleting the running prompt must not stop it"
    entry = comfy.wait_history(long_id, long_timeout(slow_server))
    check_entry(steps[2]["response"]["body"], entry, long_id, "history after delete of the running prompt")
    assert entry["status"]["status_str"] == "success"


def test_queue_clear_then_interrupt_global(slow_comfy: Comfy, slow_server: Server) -> None:
    comfy = slow_comfy
    steps = load("queue_clear")["steps"]
    long_id = comfy.submit(workflow("long_about_10s"))["prompt_id"]
    cleared = [comfy.submit(workflow("empty_save"))["prompt_id"] for _ in range(2)]
    comfy.wait_running(long_id)
    assert_queue_empty_of_others(comfy, slow_server)
    check_response(steps[3]["response"], comfy.replay(steps[3]["request"]))
    rec_queue = steps[4]["response"]["body"]
    queue = check_queue(
        steps[4]["response"], comfy.get("/queue"), {rec_queue["queue_running"][0][1]: long_id}
    )
    assert [i[1] for i in queue["queue_running"]] == [long_id]
    assert not [i for i in queue["queue_pending"] if i[1] in cleared]
    if not slow_server.live:
        assert queue["queue_pending"] == []

    # interrupt_global: POST /interrupt without a body stops the running prompt
    check_response(load("interrupt_global")["response"], comfy.replay(load("interrupt_global")["request"]))
    entry = comfy.wait_history(long_id, long_timeout(slow_server))
    check_entry(
        load("history_interrupted")["response"]["body"],
        entry,
        long_id,
        "history_interrupted",
        STABLE_KEYS - TIMING_KEYS,
    )
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["outputs"] == {} and entry["status"]["messages"][-1][0] == "execution_interrupted"
    for prompt_id in cleared:
        assert comfy.history(prompt_id) == {}


def test_interrupt_by_prompt_id(slow_comfy: Comfy, slow_server: Server) -> None:
    comfy = slow_comfy
    steps = load("interrupt_prompt_id")["steps"]
    rec_long, rec_short = steps[0]["response"]["body"]["prompt_id"], steps[1]["response"]["body"]["prompt_id"]
    long_id = comfy.submit(workflow("long_about_10s"))["prompt_id"]
    short_id = comfy.submit(workflow("empty_save"))["prompt_id"]
    mapping = {rec_long: long_id, rec_short: short_id}
    comfy.wait_running(long_id)
    check_response(steps[2]["response"], comfy.replay(steps[2]["request"], json={"prompt_id": short_id}))
    check_response(
        steps[3]["response"], comfy.replay(steps[3]["request"], json={"prompt_id": f"no-such-{token()}"})
    )
    time.sleep(slow_server.blur_seconds * 1.5)  # let a node boundary pass: an acted-on interrupt would show
    queue = check_queue(steps[4]["response"], comfy.get("/queue"), mapping)
    assert [i[1] for i in queue["queue_running"]] == [long_id], (
        "a pending/unknown prompt_id interrupted the run"
    )
    assert short_id in [i[1] for i in queue["queue_pending"]]
    check_response(steps[5]["response"], comfy.replay(steps[5]["request"], json={"prompt_id": long_id}))
    entry = comfy.wait_history(long_id, long_timeout(slow_server))
    check_entry(
        steps[6]["response"]["body"], entry, long_id, "interrupted by prompt_id", STABLE_KEYS - TIMING_KEYS
    )
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    entry = comfy.wait_history(short_id, long_timeout(slow_server))
    check_entry(steps[7]["response"]["body"], entry, short_id, "the pending prompt still runs")
    assert entry["status"]["status_str"] == "success"


def test_interrupt_idle(comfy: Comfy, contract_server: Server) -> None:
    steps = load("interrupt_idle")["steps"]
    wait_idle_or_skip(comfy, contract_server)
    check_response(steps[0]["response"], comfy.replay(steps[0]["request"]))
    body = check_response(
        steps[1]["response"], comfy.replay(steps[1]["request"], json={"prompt": workflow("empty_save")})
    )
    entry = comfy.wait_history(body["prompt_id"])
    check_entry(steps[2]["response"]["body"], entry, body["prompt_id"], "prompt after an idle interrupt")
    assert entry["status"]["status_str"] == "success"


def test_free_drops_the_cache(comfy: Comfy) -> None:
    steps = load("free")["steps"]

    def run(prompt: dict[str, Any]) -> tuple[list[str], int]:
        body = comfy.submit(copy.deepcopy(prompt))
        entry = comfy.wait_history(body["prompt_id"])
        assert entry["status"]["status_str"] == "success"
        check_entry(steps[1]["response"]["body"], entry, body["prompt_id"], "free: history")
        cached = [m for m in entry["status"]["messages"] if m[0] == "execution_cached"]
        return sorted(cached[0][1]["nodes"]), body["number"]

    # The cache holds the last prompt's outputs only: another client's prompt run between ours (a
    # shared live server) replaces it. `number` counts submissions: consecutive = nobody else's.
    for _attempt in range(3):
        prompt = workflow("empty_save")
        first, first_number = run(prompt)
        second, second_number = run(prompt)
        if second_number == first_number + 1:
            break
    else:
        pytest.skip("other clients' prompts kept running between two identical ones: the cache was theirs")
    assert first == []
    assert second == ["1", "2"], "an identical prompt should be fully cached"
    check_response(steps[4]["response"], comfy.replay(steps[4]["request"]))
    time.sleep(1.5)  # the real worker applies the flags at most ~1 s later
    assert run(prompt)[0] == [], "after /free the cache must be dropped"


# --------------------------------------------------------------------------------------------------
# upload and /view


def upload(comfy: Comfy, name: str, data: bytes, **fields: str) -> requests.Response:
    return comfy.post("/upload/image", files={"image": (name, data, "image/png")}, data=fields)


def test_upload_duplicate_renamed_view_and_loadimage(comfy: Comfy) -> None:
    stem = f"contract_{token()}"
    name = f"{stem}.png"
    mapping = {"contract_upload.png": name, "contract_upload (1).png": f"{stem} (1).png"}
    png = tiny_png(seed=random.randrange(1 << 30))

    ok = upload(comfy, name, png, type="input", subfolder="contract", overwrite="true")
    assert check_response(load("upload_image")["response"], ok, mapping) == {
        "name": name,
        "subfolder": "contract",
        "type": "input",
    }

    dup = upload(comfy, name, png, type="input", subfolder="contract")
    assert check_response(load("upload_image_duplicate")["response"], dup, mapping)["name"] == name

    other = tiny_png(seed=random.randrange(1 << 30))
    renamed = upload(comfy, name, other, type="input", subfolder="contract")
    assert (
        check_response(load("upload_image_renamed")["response"], renamed, mapping)["name"]
        == f"{stem} (1).png"
    )

    rec = load("view_input_upload")
    view = comfy.get("/view", params={"filename": name, "subfolder": "contract", "type": "input"})
    assert check_response(rec["response"], view, mapping) == png

    steps = load("prompt_loadimage_uploaded")["steps"]
    prompt = workflow("load_invert_save")
    prompt["1"]["inputs"]["image"] = f"contract/{name}"
    body = check_response(steps[0]["response"], comfy.replay(steps[0]["request"], json={"prompt": prompt}))
    entry = comfy.wait_history(body["prompt_id"])
    check_entry(steps[1]["response"]["body"], entry, body["prompt_id"], "LoadImage of the upload")
    assert entry["status"]["status_str"] == "success"


def test_upload_no_file(comfy: Comfy) -> None:
    rec = load("upload_image_no_file")
    response = comfy.post(
        "/upload/image", files={"other": ("x.txt", b"x", "text/plain")}, data={"type": "input"}
    )
    check_response(rec["response"], response)


def test_upload_traversal(comfy: Comfy) -> None:
    rec = load("upload_image_traversal")
    response = upload(comfy, f"evil_{token()}.png", tiny_png(1), type="input", subfolder="../..")
    check_response(rec["response"], response)


VIEW_CASES = [
    "view_output",
    "view_temp",
    "view_input_upload",
    "view_preview_webp",
    "view_channel_rgb",
    "view_annotated_filename",
    "view_filename_with_slash",
    "view_missing",
    "view_no_filename",
    "view_bad_type",
    "view_traversal_filename",
    "view_absolute_filename",
    "view_traversal_subfolder",
    "view_traversal_subfolder_etc",
    "view_absolute_subfolder",
]


@pytest.fixture
def view_files(comfy: Comfy) -> dict[str, str]:
    """Recorded file name -> a file of ours of the same kind on the server under test."""
    out_entry = comfy.wait_history(comfy.submit(workflow("batch_of_3"))["prompt_id"])
    temp_entry = comfy.wait_history(comfy.submit(workflow("preview_temp"))["prompt_id"])
    output_name = out_entry["outputs"]["2"]["images"][0]["filename"]
    temp_name = temp_entry["outputs"]["2"]["images"][0]["filename"]
    upload_name = f"contract_{token()}.png"
    response = upload(
        comfy, upload_name, tiny_png(random.randrange(1 << 30)), type="input", subfolder="contract"
    )
    assert response.status_code == 200
    return {
        "batch_00025_.png": output_name,
        "ComfyUI_temp_lopif_00001_.png": temp_name,
        "contract_upload.png": response.json()["name"],
        "nope_00001_.png": f"nope_{token()}_00001_.png",
    }


@pytest.mark.parametrize("name", VIEW_CASES)
def test_view(comfy: Comfy, view_files: dict[str, str], name: str) -> None:
    rec = load(name)
    query = dict(rec["request"].get("query", {}))
    for key, value in query.items():
        for old, new in view_files.items():
            value = value.replace(old, new)
        query[key] = value
    response = comfy.get("/view", params=query)
    check_response(rec["response"], response, view_files, what=f"{name} {query}")


# --------------------------------------------------------------------------------------------------
# WebSocket


def binary_info(m: Message) -> dict[str, Any]:
    info = m.data if m.kind == "binary" else {}
    keep = {1: ("image_format", "image_magic_hex"), 3: ("node_id", "text"), 4: ("image_magic_hex",)}
    return {k: info.get(k) for k in ("event_type", *keep.get(info.get("event_type"), ()))}


def compare_ws(
    recorded: list[dict[str, Any]],
    rec_prompt_id: str,
    actual: list[Message],
    prompt_id: str,
    mapping: dict[str, str] | None = None,
    stable: frozenset[str] = STABLE_KEYS,
    what: str = "ws",
) -> list[Message]:
    """Compare a recorded WebSocket transcript with the messages read for ``prompt_id``."""
    expected = recorded_messages(recorded)
    mine = ours(actual, prompt_id)
    exp_types = collapse(m.type for m in expected)
    act_types = collapse(m.type for m in mine)
    exp_core = collapse(m.type for m in expected if m.type != "status")
    act_core = collapse(m.type for m in mine if m.type != "status")
    assert act_core == exp_core, (
        f"{what}: event order (status left out)\n  got      {act_core}\n  recorded {exp_core}"
    )
    assert is_subsequence(exp_types, act_types), (
        f"{what}: event order\n  got      {act_types}\n  recorded {exp_types}"
    )
    compare_ws_data(expected, rec_prompt_id, mine, prompt_id, mapping, stable, what)
    return mine


def compare_ws_data(
    expected: list[Message],
    rec_prompt_id: str,
    mine: list[Message],
    prompt_id: str,
    mapping: dict[str, str] | None,
    stable: frozenset[str],
    what: str,
) -> None:
    """The data of each event type (its first occurrence) and the binary frames, as recorded."""
    exp_keys, act_keys = keys_by_type(expected), keys_by_type(mine)
    for event, keys in exp_keys.items():
        assert act_keys.get(event) == keys, (
            f"{what}: {event} data keys {act_keys.get(event)} != recorded {keys}"
        )
    mapping = {rec_prompt_id: prompt_id, **(mapping or {})}
    seen: set[str] = set()
    for m in expected:
        if m.type in seen:
            continue
        seen.add(m.type)
        got = next(a for a in mine if a.type == m.type)
        if m.kind == "text":
            diffs = shape_diff(rebind(m.data, mapping), got.data, f"{m.type}.data", stable)
            assert not diffs, f"{what}: first {m.type} differs:\n  " + "\n  ".join(diffs)
        else:
            assert binary_info(got) == binary_info(m), (
                f"{what}: {m.type}: {binary_info(got)} != {binary_info(m)}"
            )
            if "metadata" in m.data:
                diffs = shape_diff(
                    rebind(m.data["metadata"], mapping),
                    got.data["metadata"],
                    "metadata",
                    stable | {"image_type"},
                )
                assert not diffs, f"{what}: preview metadata differs: {diffs}"
    binaries_expected = [binary_info(m) for m in expected if m.kind == "binary"]
    assert [binary_info(m) for m in mine if m.kind == "binary"] == binaries_expected, f"{what}: binary frames"


def run_ws(
    comfy: Comfy,
    server: Server,
    prompt: dict[str, Any],
    *,
    with_client_id: bool = True,
    feature_flags: dict[str, Any] | None = None,
    on_message: Any = None,
    timeout: float = 60.0,
) -> tuple[str, Socket]:
    """Open /ws, submit ``prompt`` and read until it has finished; return (prompt_id, socket)."""
    client_id = f"contract-{token()}"
    sock = Socket(server.url, client_id)
    try:
        first = sock.read_until(lambda m: True, timeout=10)
        assert first.type == "status" and isinstance(first.data.get("sid"), str), first
        if feature_flags is not None:
            sock.send_json({"type": "feature_flags", "data": feature_flags})
            sock.read_until(lambda m: m.type == "feature_flags", timeout=10)
        extra = {"client_id": client_id} if with_client_id else {}
        prompt_id = comfy.submit(prompt, **extra)["prompt_id"]

        def stop(m: Message) -> bool:
            if on_message is not None:
                on_message(m, prompt_id)
            return (
                m.type == "executing" and m.data.get("node") is None and m.data.get("prompt_id") == prompt_id
            )

        if with_client_id:
            sock.read_until(stop, timeout=timeout)
        else:
            deadline = time.monotonic() + timeout
            while not comfy.history(prompt_id):
                assert time.monotonic() < deadline, f"no history for {prompt_id}"
                msg = sock.recv(0.05)
                if msg is not None and on_message is not None:
                    on_message(msg, prompt_id)
            sock.drain(quiet=0.5, limit=5)
    except BaseException:
        sock.close()
        raise
    return prompt_id, sock


def ws_case(name: str) -> tuple[dict[str, Any], str]:
    rec = load(name)
    return rec, rec["submit"]["response"]["body"]["prompt_id"]


def test_ws_success(comfy: Comfy, contract_server: Server) -> None:
    rec, rec_id = ws_case("ws_success")
    prompt_id, sock = run_ws(comfy, contract_server, recorded_prompt(rec["submit"]["request"]))
    sock.close()
    mine = compare_ws(
        rec["messages"],
        rec_id,
        sock.messages,
        prompt_id,
        {rec["client_id"]: sock.client_id},
        what="ws_success",
    )
    executing = [m.data["node"] for m in mine if m.type == "executing"]
    assert executing == ["1", "2", "3", "4", None]
    assert mine[-1].type == "executing" and mine[-1].data == {"node": None, "prompt_id": prompt_id}


def test_ws_cached(comfy: Comfy, contract_server: Server) -> None:
    rec, rec_id = ws_case("ws_cached")
    prompt = recorded_prompt(rec["submit"]["request"])
    first = comfy.wait_history(comfy.submit(copy.deepcopy(prompt))["prompt_id"])
    prompt_id, sock = run_ws(comfy, contract_server, prompt)
    sock.close()
    mine = compare_ws(rec["messages"], rec_id, sock.messages, prompt_id, what="ws_cached")
    cached = next(m for m in mine if m.type == "execution_cached")
    assert sorted(cached.data["nodes"]) == ["1", "2", "3", "4"]
    executed = next(m for m in mine if m.type == "executed")
    assert executed.data["output"] == first["outputs"]["4"], "the cached output (same file) is replayed"


def test_ws_error(comfy: Comfy, contract_server: Server) -> None:
    rec, rec_id = ws_case("ws_error")
    prompt_id, sock = run_ws(comfy, contract_server, workflow("runtime_error"))
    sock.close()
    mine = compare_ws(rec["messages"], rec_id, sock.messages, prompt_id, what="ws_error")
    error = next(m for m in mine if m.type == "execution_error")
    history = comfy.wait_history(prompt_id)["status"]["messages"][-1]
    assert history[0] == "execution_error" and set(history[1]) == set(error.data)


def test_ws_interrupted(slow_comfy: Comfy, slow_server: Server) -> None:
    """An interrupt sent while node 12 runs: the invariant, not where it lands.

    How many nodes finish before the server sees the flag depends on timing (the recording stopped
    at node 13; a quick interrupt stops node 12 itself, a slow one a later node). The contract: some
    nodes ran, then ``execution_interrupted`` for this prompt naming the node that was executing and
    the nodes that ran before it, then ``executing`` with ``node: null``; nothing ran after it.
    On the stand-in node 12 is held in a gate until the interrupt was acknowledged, so its run
    always matches the recording exactly.
    """
    rec, rec_id = ws_case("ws_interrupted")
    prompt = workflow("long_about_10s")
    standin = slow_server.handle
    if standin is not None:
        prompt["12"] = {"class_type": "StandInGate", "inputs": {"image": ["11", 0], "gate": "ws12"}}

    def interrupt_on_12(m: Message, prompt_id: str) -> None:
        if m.type == "executing" and m.data.get("node") == "12":
            if standin is not None:
                standin.gates.wait_blocked("ws12")
            slow_comfy.interrupt(prompt_id)
            if standin is not None:
                standin.gates.release("ws12")

    prompt_id, sock = run_ws(
        slow_comfy, slow_server, prompt, on_message=interrupt_on_12, timeout=long_timeout(slow_server)
    )
    sock.close()
    mine = ours(sock.messages, prompt_id)
    core = [m for m in mine if m.type != "status"]
    stops = [i for i, m in enumerate(core) if m.type == "execution_interrupted"]
    assert len(stops) == 1, [m.type for m in core]
    before, stop, after = core[: stops[0]], core[stops[0]], core[stops[0] + 1 :]
    assert [m.type for m in before[:2]] == ["execution_start", "execution_cached"]
    assert not any(m.type in ("execution_success", "execution_error", "executed") for m in before)
    ran = [m.data["node"] for m in before if m.type == "executing"]
    assert ran[:4] == ["1", "10", "11", "12"], ran  # the interrupt was sent once 12 executed
    assert stop.data["prompt_id"] == prompt_id and stop.data["node_id"] == ran[-1]
    assert sorted(stop.data["executed"]) == sorted(ran[:-1])  # some nodes ran, all before it
    assert stop.data["node_type"] == prompt[ran[-1]]["class_type"]
    # nothing ran after the interrupt: only the end marker follows
    assert [(m.type, m.data.get("node")) for m in after] == [("executing", None)]
    compare_ws_data(
        recorded_messages(rec["messages"]),
        rec_id,
        mine,
        prompt_id,
        None,
        STABLE_KEYS - TIMING_KEYS,
        "ws_interrupted",
    )
    if standin is not None:  # held at node 12 until the interrupt was acknowledged: as recorded
        recorded_core = [t for t in rec["types_in_order"] if t != "status"]
        assert collapse(m.type for m in core) == collapse(recorded_core)
        assert stop.data["node_id"] == "13"


@pytest.mark.parametrize(
    ("name", "flags"), [("ws_progress", None), ("ws_progress_metadata", {"supports_preview_metadata": True})]
)
def test_ws_progress_previews(
    comfy: Comfy, contract_server: Server, name: str, flags: dict[str, Any] | None
) -> None:
    rec, rec_id = ws_case(name)
    prompt_id, sock = run_ws(comfy, contract_server, workflow("websocket_progress"), feature_flags=flags)
    sock.close()
    mine = compare_ws(rec["messages"], rec_id, sock.messages, prompt_id, what=name)
    progress = [(m.data["value"], m.data["max"]) for m in mine if m.type == "progress"]
    assert progress == [(0, 3), (1, 3), (2, 3)]
    if flags:
        reply = next(m for m in sock.messages if m.type == "feature_flags")
        assert reply.data == load("features")["response"]["body"]


def test_ws_progress_text(comfy: Comfy, contract_server: Server) -> None:
    rec, rec_id = ws_case("ws_progress_text")
    prompt_id, sock = run_ws(comfy, contract_server, workflow("text_output"))
    sock.close()
    mine = compare_ws(rec["messages"], rec_id, sock.messages, prompt_id, what="ws_progress_text")
    text = next(m for m in mine if m.type == "binary:TEXT")
    assert text.data["node_id"] == "2" and text.data["text"] == "width: 320, height: 200\n batch size: 2"
    assert next(m for m in mine if m.type == "executed").data["output"] == {"text": ["320"]}


NOT_BROADCAST = {
    "execution_start",
    "execution_cached",
    "executing",
    "executed",
    "execution_success",
    "execution_error",
}


@pytest.mark.parametrize(
    ("name", "workflow_name"),
    [("ws_no_client_id", "scale_blur_save"), ("ws_no_client_id_progress", "websocket_progress")],
)
def test_ws_no_client_id(comfy: Comfy, contract_server: Server, name: str, workflow_name: str) -> None:
    rec, rec_id = ws_case(name)
    prompt_id, sock = run_ws(comfy, contract_server, workflow(workflow_name), with_client_id=False)
    sock.close()
    mine = compare_ws(rec["messages"], rec_id, sock.messages, prompt_id, what=name)
    assert not NOT_BROADCAST & {m.type for m in mine}


def test_ws_no_client_id_interrupted(slow_comfy: Comfy, slow_server: Server) -> None:
    rec, rec_id = ws_case("ws_no_client_id_interrupted")
    sent: list[str] = []

    def interrupt_once_running(m: Message, prompt_id: str) -> None:
        node_10 = m.data.get("nodes", {}).get("10", {}) if m.type == "progress_state" else {}
        if not sent and m.data.get("prompt_id") == prompt_id and node_10.get("state") == "running":
            slow_comfy.interrupt(prompt_id)
            sent.append(prompt_id)

    prompt = recorded_prompt(rec["submit"]["request"])
    prompt["99"]["inputs"]["filename_prefix"] = f"contract/{token()}_long"
    prompt_id, sock = run_ws(
        slow_comfy,
        slow_server,
        prompt,
        with_client_id=False,
        on_message=interrupt_once_running,
        timeout=long_timeout(slow_server),
    )
    sock.close()
    assert sent, "never saw node 10 running"
    stable = STABLE_KEYS - TIMING_KEYS
    mine = compare_ws(
        rec["messages"], rec_id, sock.messages, prompt_id, stable=stable, what="ws_no_client_id_interrupted"
    )
    assert not NOT_BROADCAST & {m.type for m in mine}


def test_ws_two_clients(comfy: Comfy, contract_server: Server) -> None:
    rec = load("ws_two_clients")
    rec_id = rec["submit"]["response"]["body"]["prompt_id"]
    other = Socket(contract_server.url, f"contract-{token()}")
    try:
        first = other.read_until(lambda m: True, timeout=10)
        assert first.type == "status"
        prompt_id, sock = run_ws(comfy, contract_server, recorded_prompt(rec["submit"]["request"]))
        sock.close()
        other.drain(quiet=0.5, limit=5)
    finally:
        other.close()
    compare_ws(rec["client_a"]["messages"], rec_id, sock.messages, prompt_id, what="ws_two_clients A")
    b_types = {m.type for m in ours(other.messages, prompt_id)}
    assert b_types == set(rec["client_b"]["types_in_order"]) == {"status"}, b_types
    assert not [m for m in other.messages if m.prompt_id == prompt_id], "B got events of A's prompt"


# --------------------------------------------------------------------------------------------------
# restart (stand-in only: the live server cannot be restarted from a test)


def test_restart(slow_comfy: Comfy, slow_server: Server) -> None:
    if slow_server.live:
        pytest.skip("a restart cannot be replayed against the live server")
    comfy = slow_comfy
    steps = load("restart")["steps"]
    done_id = comfy.submit(workflow("empty_save"))["prompt_id"]
    done = comfy.wait_history(done_id)
    image = done["outputs"]["2"]["images"][0]
    running_id = comfy.submit(workflow("long_about_10s"))["prompt_id"]
    pending_id = comfy.submit(workflow("empty_save"))["prompt_id"]
    comfy.wait_running(running_id)
    slow_server.handle.restart()
    comfy = Comfy(str(slow_server.handle.url).rstrip("/"))
    comfy.wait_until("the restarted server answers", lambda: comfy.get("/system_stats").status_code == 200)
    by_note = {s.get("note"): s for s in steps}
    for prompt_id in (done_id, running_id, pending_id):
        check_response(
            by_note["completed prompt after restart"]["response"], comfy.get(f"/history/{prompt_id}")
        )
        assert comfy.history(prompt_id) == {}
    check_response(by_note["all history"]["response"], comfy.get("/history"))
    assert comfy.get("/history").json() == {}
    assert comfy.queue() == {"queue_running": [], "queue_pending": []}
    view = comfy.get(
        "/view", params={"filename": image["filename"], "subfolder": image["subfolder"], "type": "output"}
    )
    check_response(
        by_note["output file written before the restart"]["response"],
        view,
        {"empty_00059_.png": image["filename"]},
    )
    body = check_response(
        by_note["first prompt after restart: number restarts at 0"]["response"],
        comfy.post("/prompt", json={"prompt": workflow("empty_save")}),
    )
    assert body["number"] == 0
    comfy.submitted.append(body["prompt_id"])
    assert comfy.wait_history(body["prompt_id"])["status"]["status_str"] == "success"
    comfy.cleanup()

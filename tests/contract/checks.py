"""Shared checks of the contract tests, which replay the requests recorded from a real ComfyUI 0.3.64.

Every test runs twice: against the stand-in server (``[standin]``) and against the real ComfyUI named
by COMFYUI_URL (``[live]``, skipped when unset). Status codes, content types and body *shapes* are
compared with the recordings in tests/data/comfyui-0.3.64; volatile values are not (see shapes.py).
The tests are split by topic into the test_*.py files beside this module; what they share is here.

The tests keep to their own prompts so that they can run against a shared live server: unique ids,
prefixes and file names, bounded waits, our own prompts interrupted or deleted at the end, and the
operations that would disturb other clients (queue/history clear, global interrupt) only run when
the server's queue holds nothing but ours.
"""

from __future__ import annotations

import copy
import random
import time
from typing import Any

import pytest
import requests

from .clients import Comfy, Message, Socket, keys_by_type, ours, recorded_messages
from .conftest import Server
from .shapes import (
    STABLE_KEYS,
    assert_shape,
    collapse,
    is_subsequence,
    load,
    media_type,
    rebind,
    shape_diff,
    token,
    workflows,
)

WORKFLOWS = workflows()


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


def held_at_12(prompt: dict[str, Any], server: Server, gate: str) -> dict[str, Any]:
    """``long_about_10s`` held at node 12 until :func:`release` on the stand-in (a ``StandInGate``).

    The live server has no gates: there the run (about 10 s) outlasts the few requests a test makes
    while it must still run.
    """
    if server.handle is not None:
        prompt["12"] = {"class_type": "StandInGate", "inputs": {"image": ["11", 0], "gate": gate}}
    return prompt


def wait_held(comfy: Comfy, server: Server, prompt_id: str, gate: str) -> None:
    """Until ``prompt_id`` runs (on the stand-in: until it is held at its gate)."""
    if server.handle is not None:
        server.handle.gates.wait_blocked(gate)
    else:
        comfy.wait_running(prompt_id)


def release(server: Server, gate: str) -> None:
    if server.handle is not None:
        server.handle.gates.release(gate)


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

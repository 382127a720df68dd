"""Contract: the /ws messages of a run (success, cached, error, interrupted, previews, text,
no client id, two clients), compared with the recorded transcripts."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from .checks import (
    TIMING_KEYS,
    compare_ws,
    compare_ws_data,
    long_timeout,
    recorded_prompt,
    run_ws,
    workflow,
    ws_case,
)
from .clients import Comfy, Message, Socket, ours, recorded_messages
from .conftest import Server
from .shapes import STABLE_KEYS, collapse, load, token

pytestmark = pytest.mark.timeout(240)


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

"""Queue, history, interrupt, /free and restart on the stand-in, against the recorded behaviour."""

from __future__ import annotations

import copy
import time

import requests
from standin_helpers import gated, history, load_transcript, run, submit


def _get(server, path: str, **params):
    return requests.get(server.url + path, params=params, timeout=10)


def _post(server, path: str, body=None):
    return requests.post(server.url + path, json=body, timeout=10)


def _long_running(server, contract_workflows, **extra) -> str:
    """Submit `long_about_10s` held in a gate at node 10; returns once it is running there."""
    prompt_id = submit(server, gated(contract_workflows["long_about_10s"], "10"), **extra)["prompt_id"]
    server.gates.wait_blocked("gate")
    return prompt_id


def test_queue_busy_delete_and_clear(standin, contract_workflows) -> None:
    long = _long_running(standin, contract_workflows)
    pending = [submit(standin, contract_workflows["empty_save"])["prompt_id"] for _ in range(3)]
    body = _get(standin, "/queue").json()
    assert set(body) == {"queue_running", "queue_pending"}
    assert [item[1] for item in body["queue_running"]] == [long]
    assert sorted(item[1] for item in body["queue_pending"]) == sorted(pending)
    assert all(len(item) == 5 for item in body["queue_pending"])
    assert history(standin, long) == {} and history(standin, pending[0]) == {}
    response = _post(standin, "/queue", {"delete": [pending[0], long]})
    assert (response.status_code, response.content) == (200, b"")
    body = _get(standin, "/queue").json()
    assert [item[1] for item in body["queue_running"]] == [long]
    assert sorted(item[1] for item in body["queue_pending"]) == sorted(pending[1:])
    assert _post(standin, "/queue", {"clear": True}).status_code == 200
    assert _get(standin, "/queue").json()["queue_pending"] == []
    standin.gates.release("gate")
    standin.wait_idle(30)
    assert history(standin, long)[long]["status"]["status_str"] == "success"
    assert history(standin, pending[0]) == {}


def test_front_runs_first(standin, contract_workflows) -> None:
    long = _long_running(standin, contract_workflows)
    back = submit(standin, contract_workflows["empty_save"])["prompt_id"]
    workflow = copy.deepcopy(contract_workflows["empty_save"])
    workflow["1"]["inputs"]["color"] = 5
    front = submit(standin, workflow, front=True)["prompt_id"]
    _post(standin, "/interrupt")
    standin.gates.release("gate")
    standin.wait_idle(30)
    assert list(_get(standin, "/history").json())[-3:] == [long, front, back]


def test_interrupt_rules(standin, contract_workflows) -> None:
    workflow = gated(gated(contract_workflows["long_about_10s"], "10", "a"), "12", "b")
    long = submit(standin, workflow)["prompt_id"]
    standin.gates.wait_blocked("a")
    short = submit(standin, contract_workflows["empty_save"])["prompt_id"]
    for body in ({"prompt_id": short}, {"prompt_id": "no-such-id"}):
        response = _post(standin, "/interrupt", body)
        assert (response.status_code, response.content) == (200, b"")
    standin.gates.release("a")
    standin.gates.wait_blocked("b")  # node 11 started after those: they set no interrupt
    assert [i[1] for i in _get(standin, "/queue").json()["queue_running"]] == [long]
    _post(standin, "/interrupt", {"prompt_id": long})
    standin.gates.release("b")
    standin.wait_idle(30)
    entry = history(standin, long)[long]
    recorded = next(iter(load_transcript("history_interrupted")["response"]["body"].values()))
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    event, data = entry["status"]["messages"][-1]
    assert event == "execution_interrupted"
    assert set(data) == set(recorded["status"]["messages"][-1][1])
    assert data["node_id"] == "13" and sorted(data["executed"]) == ["1", "10", "11", "12"]
    assert (entry["outputs"], entry["meta"]) == ({}, {})
    assert history(standin, short)[short]["status"]["status_str"] == "success"


def test_interrupt_while_idle_does_not_leak(standin, contract_workflows) -> None:
    response = requests.post(standin.url + "/interrupt", timeout=10)
    assert (response.status_code, response.content) == (200, b"")
    assert run(standin, contract_workflows["empty_save"])["status"]["status_str"] == "success"


def test_history_entry_shapes(standin, contract_workflows) -> None:
    entry = run(standin, contract_workflows["empty_save"])
    recorded = next(iter(load_transcript("history_done")["response"]["body"].values()))
    assert list(entry) == list(recorded)
    assert [m[0] for m in entry["status"]["messages"]] == [m[0] for m in recorded["status"]["messages"]]
    assert entry["meta"] == recorded["meta"]
    assert entry["prompt"][2:] == [contract_workflows["empty_save"], {}, ["2"]]
    error = run(standin, contract_workflows["runtime_error"])
    recorded = next(iter(load_transcript("history_error")["response"]["body"].values()))
    assert (error["outputs"], error["meta"], error["status"]["completed"]) == ({}, {}, False)
    assert set(error["status"]["messages"][-1][1]) == set(recorded["status"]["messages"][-1][1])
    assert history(standin, "never-seen") == {}


def test_history_listing_limits_and_deletion(standin, contract_workflows) -> None:
    ids = []
    for color in (1, 2, 3):
        workflow = copy.deepcopy(contract_workflows["empty_save"])
        workflow["1"]["inputs"]["color"] = color
        ids.append(submit(standin, workflow)["prompt_id"])
    standin.wait_idle(30)
    assert list(_get(standin, "/history").json()) == ids
    assert list(_get(standin, "/history", max_items=2).json()) == ids[1:]
    assert list(_get(standin, "/history", max_items=1, offset=0).json()) == ids[:1]
    bad = _get(standin, "/history", max_items="abc")
    assert bad.status_code == 500 and bad.headers["Content-Type"].startswith("text/plain")
    response = _post(standin, "/history", {"delete": [ids[0]]})
    assert (response.status_code, response.content) == (200, b"")
    assert list(_get(standin, "/history").json()) == ids[1:]
    _post(standin, "/history", {"clear": True})
    assert _get(standin, "/history").json() == {}


def test_free_drops_the_cache(standin, contract_workflows) -> None:
    workflow = contract_workflows["empty_save"]

    def cached_nodes(entry):
        return next(d for e, d in entry["status"]["messages"] if e == "execution_cached")["nodes"]

    first = run(standin, workflow)
    again = run(standin, workflow)
    assert cached_nodes(first) == [] and cached_nodes(again) == ["1", "2"]
    assert again["outputs"] == first["outputs"]
    assert requests.post(standin.url + "/free", timeout=10).status_code == 500
    response = _post(standin, "/free", {"unload_models": True, "free_memory": True})
    assert (response.status_code, response.content) == (200, b"")
    standin.wait_idle(30)
    # Like ComfyUI's worker, the stand-in's applies /free between prompts: a prompt queued before the
    # worker took the flag would still find the cache. Wait (bounded) until it has taken it.
    deadline = time.monotonic() + 30
    while standin.engine.flags and time.monotonic() < deadline:
        time.sleep(0.01)
    after = run(standin, workflow)
    assert cached_nodes(after) == []
    assert after["outputs"] != first["outputs"]


def test_restart_loses_state_but_keeps_files(standin, contract_workflows) -> None:
    port = standin.port
    done = run(standin, contract_workflows["empty_save"])
    image = done["outputs"]["2"]["images"][0]
    running = _long_running(standin, contract_workflows)
    pending = submit(standin, contract_workflows["batch_of_3"])["prompt_id"]
    standin.restart()
    assert standin.port == port
    assert history(standin, running) == {} and history(standin, pending) == {}
    assert _get(standin, "/history").json() == {}
    assert _get(standin, "/queue").json() == {"queue_running": [], "queue_pending": []}
    view = _get(standin, "/view", filename=image["filename"], subfolder=image["subfolder"], type="output")
    assert view.status_code == 200
    assert submit(standin, contract_workflows["empty_save"])["number"] == 0
    standin.wait_idle(30)


def test_hold_keeps_prompts_pending_until_released_even_across_restart(standin, contract_workflows) -> None:
    standin.hold()
    held = submit(standin, contract_workflows["empty_save"])["prompt_id"]
    standin.restart()  # still held afterwards; the restart lost the queue, so submit again
    held = submit(standin, contract_workflows["empty_save"])["prompt_id"]
    body = _get(standin, "/queue").json()
    assert body["queue_running"] == [] and [item[1] for item in body["queue_pending"]] == [held]
    assert history(standin, held) == {} and not standin.engine.is_idle()
    standin.hold(False)
    standin.wait_idle(30)
    assert history(standin, held)[held]["status"]["status_str"] == "success"

"""Contract: the queue, interrupts, /free, and a restart (the slow server runs `long_about_10s` long
enough to be observed; the restart is the stand-in's only)."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from .checks import (
    TIMING_KEYS,
    assert_queue_empty_of_others,
    check_entry,
    check_queue,
    check_response,
    long_timeout,
    wait_idle_or_skip,
    workflow,
)
from .clients import Comfy
from .conftest import Server
from .shapes import STABLE_KEYS, load, token

pytestmark = pytest.mark.timeout(240)

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

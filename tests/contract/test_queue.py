"""Contract: the queue, interrupts, /free, and a restart (the slow server runs `long_about_10s` long
enough to be observed; the restart is the stand-in's only)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from .checks import (
    TIMING_KEYS,
    assert_queue_empty_of_others,
    check_entry,
    check_queue,
    check_response,
    held_at_12,
    long_timeout,
    release,
    wait_held,
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
    """Only an interrupt naming the running prompt stops it, wherever in the run it lands.

    No sleep decides anything. The long prompt that got the interrupts naming a pending and an
    unknown prompt runs to its end and must succeed (an acted-on interrupt would stop it at its
    next node). The interrupt by id goes to a second long prompt while it runs; whichever node it
    lands in, the history is the recorded one but for where it landed (``TIMING_KEYS``). On the
    stand-in both long prompts are held at node 12 while the test acts; on the live server a run
    of about 10 s outlasts the few requests made meanwhile.
    """
    comfy = slow_comfy
    steps = load("interrupt_prompt_id")["steps"]
    rec_long, rec_short = steps[0]["response"]["body"]["prompt_id"], steps[1]["response"]["body"]["prompt_id"]
    long_prompt = held_at_12(workflow("long_about_10s"), slow_server, "noop")
    long_id = comfy.submit(long_prompt)["prompt_id"]
    short_id = comfy.submit(workflow("empty_save"))["prompt_id"]
    mapping = {rec_long: long_id, rec_short: short_id}
    wait_held(comfy, slow_server, long_id, "noop")
    try:
        check_response(steps[2]["response"], comfy.replay(steps[2]["request"], json={"prompt_id": short_id}))
        check_response(
            steps[3]["response"], comfy.replay(steps[3]["request"], json={"prompt_id": f"no-such-{token()}"})
        )
        recorded_queue = copy.deepcopy(steps[4]["response"])
        recorded_queue["body"]["queue_running"][0][2]["12"] = long_prompt[
            "12"
        ]  # ours (a gate on the stand-in)
        queue = check_queue(recorded_queue, comfy.get("/queue"), mapping)
        assert [i[1] for i in queue["queue_running"]] == [long_id]
        assert short_id in [i[1] for i in queue["queue_pending"]]
    finally:
        release(slow_server, "noop")
    entry = comfy.wait_history(long_id, long_timeout(slow_server))
    assert entry["status"]["status_str"] == "success", (
        f"a pending/unknown prompt_id interrupted the run: {entry['status']['messages']}"
    )
    entry = comfy.wait_history(short_id, long_timeout(slow_server))
    check_entry(steps[7]["response"]["body"], entry, short_id, "the pending prompt still runs")
    assert entry["status"]["status_str"] == "success"

    target = held_at_12(workflow("long_about_10s"), slow_server, "by-id")
    target_id = comfy.submit(target)["prompt_id"]
    wait_held(comfy, slow_server, target_id, "by-id")
    try:
        check_response(steps[5]["response"], comfy.replay(steps[5]["request"], json={"prompt_id": target_id}))
    finally:
        release(slow_server, "by-id")
    entry = comfy.wait_history(target_id, long_timeout(slow_server))
    expected = copy.deepcopy(steps[6]["response"]["body"])
    next(iter(expected.values()))["prompt"][2]["12"] = target["12"]  # our node 12 (a gate on the stand-in)
    check_entry(expected, entry, target_id, "interrupted by prompt_id", STABLE_KEYS - TIMING_KEYS)
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"


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
    # ComfyUI's worker applies /free between prompts: when it took the flag before our next prompt
    # came, that prompt runs uncached; when the prompt was there first (a race with the worker
    # thread, no sleep can settle it), it runs cached and the cache goes right after it.
    after_free = run(prompt)[0]
    if after_free:
        assert after_free == ["1", "2"]
        assert run(prompt)[0] == [], "after /free the cache must be dropped, at the latest after one prompt"


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

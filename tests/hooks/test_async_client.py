"""The async client of the trigger (httpx) against the stand-in; plain asyncio.run, no plugin."""

from __future__ import annotations

import asyncio

import pytest

from airflow_comfy.exceptions import (
    ComfyUIAuthError,
    ComfyUIConnectionError,
    ComfyUIHTTPError,
    ComfyUIResponseError,
)
from airflow_comfy.hooks import async_client
from airflow_comfy.hooks.async_client import AsyncComfyUIClient
from airflow_comfy.protocol import errors, flows, states
from airflow_comfy.protocol.states import PromptState, resolve_status
from airflow_comfy.triggers import poller as poller_module
from hooks.hook_helpers import empty_save, fake_http, fast_settings, gated_save


def test_status_of_every_state(hook, standin):
    client = AsyncComfyUIClient(fast_settings(standin.url))
    running = hook.submit_prompt(gated_save())["prompt_id"]
    standin.gates.wait_blocked()
    pending = hook.submit_prompt(empty_save())["prompt_id"]

    async def states():
        return [(await client.get_prompt_status(p)).state for p in (running, pending, "unknown")]

    assert asyncio.run(states()) == [PromptState.RUNNING, PromptState.PENDING, PromptState.NOT_FOUND]
    standin.gates.release()
    standin.wait_idle(10)
    done = asyncio.run(client.get_prompt_status(running))
    assert done.state is PromptState.SUCCESS and done.outputs


def test_sequential_event_loops_do_not_share_a_client(standin):
    # asyncio.run makes a new loop each time; a client bound to a dead loop must never be reused.
    client = AsyncComfyUIClient(fast_settings(standin.url))
    for _ in range(5):
        assert asyncio.run(client.get_object("/queue")) == {"queue_running": [], "queue_pending": []}


def test_one_pool_per_loop_and_server(standin):
    settings = fast_settings(standin.url)

    async def run():
        a = async_client._shared_client(settings)
        b = async_client._shared_client(fast_settings(standin.url))
        await asyncio.gather(*(AsyncComfyUIClient(settings).get_object("/queue") for _ in range(20)))
        return a is b

    assert asyncio.run(run())


def test_cancel_pending_and_running(hook, standin):
    client = AsyncComfyUIClient(fast_settings(standin.url))
    running = hook.submit_prompt(gated_save())["prompt_id"]
    standin.gates.wait_blocked()
    pending = hook.submit_prompt(empty_save())["prompt_id"]
    other = hook.submit_prompt(empty_save())["prompt_id"]
    assert asyncio.run(client.cancel_prompt(pending)) == "removed from the queue"
    assert hook.get_prompt_status(running).state is PromptState.RUNNING
    assert asyncio.run(client.cancel_prompt(running)) == "interrupted"
    standin.gates.release()  # the interrupt acts at the next node
    standin.wait_idle(10)
    assert hook.get_prompt_status(running).state is PromptState.INTERRUPTED
    assert hook.get_prompt_status(pending).state is PromptState.NOT_FOUND
    assert hook.get_prompt_status(other).state is PromptState.SUCCESS
    assert asyncio.run(client.cancel_prompt(other)) == "nothing to do (it is success)"


def test_retries_then_success(standin):
    client = AsyncComfyUIClient(fast_settings(standin.url))
    standin.faults.fail_next(3, status=503, path="/queue")
    assert asyncio.run(client.get_object("/queue"))["queue_pending"] == []
    assert sum(1 for _m, p in standin.requests if p == "/queue") == 4


def test_retry_bound(standin):
    client = AsyncComfyUIClient(fast_settings(standin.url))
    standin.faults.fail_next(10, status=429, path="/queue")
    with pytest.raises(ComfyUIHTTPError, match="HTTP 429"):
        asyncio.run(client.get_object("/queue"))
    assert sum(1 for _m, p in standin.requests if p == "/queue") == 4
    standin.faults.reset()


@pytest.mark.parametrize(
    ("status", "error"), [(401, ComfyUIAuthError), (403, ComfyUIAuthError), (404, ComfyUIHTTPError)]
)
def test_no_retry_on_client_errors(standin, status, error):
    client = AsyncComfyUIClient(fast_settings(standin.url))
    standin.faults.fail_next(5, status=status, path="/queue")
    with pytest.raises(error):
        asyncio.run(client.get_object("/queue"))
    assert sum(1 for _m, p in standin.requests if p == "/queue") == 1
    standin.faults.reset()


def test_connection_refused(free_port_url):
    client = AsyncComfyUIClient(fast_settings(free_port_url, max_retries=1))
    with pytest.raises(ComfyUIConnectionError) as info:
        asyncio.run(client.get_prompt_status("p"))
    assert f"GET {free_port_url}/queue" in str(info.value) and "\n" not in str(info.value)  # queue first


def test_non_json_and_wrong_shape():
    with (
        fake_http(200, b"<html>login</html>") as (url, _seen),
        pytest.raises(ComfyUIResponseError, match="where JSON was expected"),
    ):
        asyncio.run(AsyncComfyUIClient(fast_settings(url)).get_object("/queue"))
    with (
        fake_http(200, b"[1]", "application/json") as (url, _seen),
        pytest.raises(ComfyUIResponseError, match="JSON object was expected"),
    ):
        asyncio.run(AsyncComfyUIClient(fast_settings(url)).get_object("/queue"))


def test_auth_headers_are_sent():
    with fake_http(200, b"{}", "application/json") as (url, seen):
        client = AsyncComfyUIClient(fast_settings(url, headers={"X-API-Key": "async-key-1"}))
        assert asyncio.run(client.get_object("/queue")) == {}
    assert seen[0]["headers"]["X-API-Key"] == "async-key-1"


# --- the shared poller ---------------------------------------------------------------------------


def _count(standin, path_prefix: str, since: int = 0) -> int:
    return sum(1 for _m, p in standin.requests[since:] if p.startswith(path_prefix))


def test_one_queue_read_per_round_and_history_only_for_prompts_that_left(hook, standin):
    finished = [hook.submit_prompt(empty_save(f"hooktest/done{i}"))["prompt_id"] for i in range(3)]
    standin.wait_idle(10)
    blocker = hook.submit_prompt(gated_save())["prompt_id"]
    standin.gates.wait_blocked()
    pending = [hook.submit_prompt(empty_save(f"hooktest/p{i}"))["prompt_id"] for i in range(20)]
    before = len(standin.requests)

    async def scenario():
        poller = poller_module.shared_poller(fast_settings(standin.url))
        watches = [poller.watch(p, 0.2) for p in [blocker, *pending, *finished]]
        seen = {w.prompt_id: [] for w in watches}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30.0  # a bound, not a figure: it ends once every watch saw two
        while min(len(v) for v in seen.values()) < 2 and loop.time() < deadline:
            for w in watches:
                status = await w.next(timeout=max(0.01, deadline - loop.time()))
                if status is not None:
                    seen[w.prompt_id].append(status.state)
        elapsed = loop.time() - (deadline - 30.0)
        for w in watches:
            w.close()
        for _ in range(1000):  # let a round still in flight finish: the poller then ends
            if not poller.running:
                break
            await asyncio.sleep(0.01)
        return poller.rounds, poller.woken_rounds, seen, poller.running, elapsed

    rounds, woken, seen, still_running, elapsed = asyncio.run(scenario())
    # Interval rounds: a loaded machine makes fewer, never more. Rounds the queue listener woke (its
    # socket's first "status" message, say) come on top, at most one per MIN_GAP.
    assert rounds >= 2 and rounds - woken <= elapsed / 0.2 + 2
    assert woken <= elapsed / poller_module.MIN_GAP + 1
    assert _count(standin, "/queue", before) == rounds
    histories = [p for _m, p in standin.requests[before:] if p.startswith("/history")]
    assert {p.rsplit("/", 1)[1] for p in histories} == set(finished)  # only those that left
    # once per round each (a round still in flight when the watches closed skips closed ones)
    assert 3 * (rounds - 1) <= len(histories) <= 3 * rounds
    assert set(seen[blocker]) == {PromptState.RUNNING}
    assert {s for p in pending for s in seen[p]} == {PromptState.PENDING}
    assert {s for p in finished for s in seen[p]} == {PromptState.SUCCESS}
    assert not still_running  # nobody registered: the poller ended
    hook.clear_queue()
    hook.cancel_prompt(blocker)
    standin.gates.release()


def test_queue_positions_match_the_protocol_core(hook, standin):
    blocker = hook.submit_prompt(gated_save())["prompt_id"]
    standin.gates.wait_blocked()
    pending = [hook.submit_prompt(empty_save(f"hooktest/q{i}"))["prompt_id"] for i in range(4)]
    front = hook.submit_prompt(empty_save("hooktest/front"), front=True)["prompt_id"]
    queue = hook.get_queue()
    found = states.queue_statuses(queue, {blocker, front, *pending, "unknown"})
    for prompt_id in (blocker, front, *pending):
        assert found[prompt_id] == resolve_status(prompt_id, {}, queue)
    assert "unknown" not in found and found[front].queue_position == 0
    standin.gates.release()
    standin.wait_idle(10)


def test_each_watch_keeps_its_own_interval(hook, standin, monkeypatch):
    blocker = hook.submit_prompt(gated_save())["prompt_id"]
    standin.gates.wait_blocked()
    before = len(standin.requests)
    rounds: list[tuple[float, set[float]]] = []  # (loop time, intervals of the watches due)
    plans: list[tuple[float, float]] = []  # (interval, wait until its next check) of each watch due
    real_round = poller_module.SharedPoller._round

    async def logged_round(self, due):
        now = self.loop.time()
        rounds.append((now, {w.interval for w in due}))
        plans.extend((w.interval, w.due - now) for w in due)
        await real_round(self, due)

    monkeypatch.setattr(poller_module.SharedPoller, "_round", logged_round)

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        poller = poller_module.shared_poller(fast_settings(standin.url))
        started = loop.time()
        fast, slow = poller.watch(blocker, 0.1), poller.watch(blocker, 0.4)

        # The window: until the slow watch was checked four times and sat out four more rounds of the
        # fast one (bounded: a slow watch checked at every fast round never gets there), not a time a
        # loaded machine may spend elsewhere.
        def counts() -> tuple[int, int]:
            return sum(1 for _t, due in rounds if 0.1 in due), sum(1 for _t, due in rounds if 0.4 in due)

        while not (counts()[1] >= 4 and counts()[0] >= counts()[1] + 4) and loop.time() < started + 60:
            await asyncio.sleep(0.01)
        fast.close()
        slow.close()
        elapsed = loop.time() - started
        for _ in range(1000):  # let a round still in flight finish: the poller then ends
            if not poller.running:
                break
            await asyncio.sleep(0.01)
        assert not poller.running
        return elapsed

    elapsed = asyncio.run(scenario())
    fast_times = [t for t, due in rounds if 0.1 in due]
    slow_times = [t for t, due in rounds if 0.4 in due]
    # rounds are shared: one /queue read each, and the slow watch rides on the fast one's rounds
    # (a round delayed on a loaded machine may shift the grids apart once or twice)
    assert _count(standin, "/queue", before) == len(rounds)
    assert not [t for t, due in rounds if due == {0.4}], rounds
    # the slow watch keeps its own, longer interval: it sits out rounds of the fast one, and is
    # never checked more often than every 0.4 s (a loaded machine makes fewer rounds, not more)
    assert len(slow_times) >= 4 and len(slow_times) + 4 <= len(fast_times)
    assert len(slow_times) <= elapsed / 0.4 + 2
    # each round schedules every watch it checked for the next tick of that watch's own interval,
    # however late the round itself ran (benchmarks/bench_triggers.py measures the real rates)
    assert all(wait <= interval + 0.01 for interval, wait in plans), plans
    hook.cancel_prompt(blocker)
    standin.gates.release()


def test_an_exception_in_a_round_does_not_end_the_poller(hook, standin, monkeypatch):
    prompt_id = hook.submit_prompt(empty_save())["prompt_id"]
    standin.wait_idle(10)
    real = flows.queue_statuses
    calls = []

    def flaky(body, ids):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug in one round")
        return real(body, ids)

    monkeypatch.setattr(flows, "queue_statuses", flaky)

    async def scenario():
        poller = poller_module.shared_poller(fast_settings(standin.url))
        with poller.watch(prompt_id, 0.1) as watch:
            with pytest.raises(poller_module.PollRoundError, match="RuntimeError: a bug in one round"):
                await watch.next(timeout=5)
            assert poller.running
            return await watch.next(timeout=5)

    status = asyncio.run(scenario())
    assert status is not None and status.state is PromptState.SUCCESS
    assert errors.is_retryable(poller_module.PollRoundError("x"))


def test_a_failed_queue_read_reaches_every_due_watch(standin):
    standin.faults.fail_next(20, status=503, path="/queue")

    async def scenario():
        poller = poller_module.shared_poller(fast_settings(standin.url, max_retries=0))
        watches = [poller.watch(p, 0.1) for p in ("a", "b", "c")]
        errors = []
        for w in watches:
            with pytest.raises(ComfyUIHTTPError) as info:
                await w.next(timeout=5)
            errors.append(info.value)
            w.close()
        return errors, poller.rounds

    errors, rounds = asyncio.run(scenario())
    assert rounds == 1 and {e.status_code for e in errors} == {503}
    assert _count(standin, "/queue") == 1 and _count(standin, "/history") == 0
    standin.faults.reset()

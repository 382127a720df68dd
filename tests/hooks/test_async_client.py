"""The async client of the trigger (httpx) against the stand-in; plain asyncio.run, no plugin."""

from __future__ import annotations

import asyncio
import itertools

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
from hooks.hook_helpers import empty_save, fake_http, fast_settings, slow_save, wait_until


def test_status_of_every_state(hook, standin):
    client = AsyncComfyUIClient(fast_settings(standin.url))
    running = hook.submit_prompt(slow_save(0.6, steps=6))["prompt_id"]
    wait_until(lambda: hook.get_prompt_status(running).state is PromptState.RUNNING)
    pending = hook.submit_prompt(empty_save())["prompt_id"]

    async def states():
        return [(await client.get_prompt_status(p)).state for p in (running, pending, "unknown")]

    assert asyncio.run(states()) == [PromptState.RUNNING, PromptState.PENDING, PromptState.NOT_FOUND]
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
    running = hook.submit_prompt(slow_save(2.0, steps=40))["prompt_id"]
    wait_until(lambda: hook.get_prompt_status(running).state is PromptState.RUNNING)
    pending = hook.submit_prompt(empty_save())["prompt_id"]
    other = hook.submit_prompt(empty_save())["prompt_id"]
    assert asyncio.run(client.cancel_prompt(pending)) == "removed from the queue"
    assert hook.get_prompt_status(running).state is PromptState.RUNNING
    assert asyncio.run(client.cancel_prompt(running)) == "interrupted"
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
    blocker = hook.submit_prompt(slow_save(3.0, steps=30))["prompt_id"]
    wait_until(lambda: hook.get_prompt_status(blocker).state is PromptState.RUNNING)
    pending = [hook.submit_prompt(empty_save(f"hooktest/p{i}"))["prompt_id"] for i in range(20)]
    before = len(standin.requests)

    async def scenario():
        poller = poller_module.shared_poller(fast_settings(standin.url))
        watches = [poller.watch(p, 0.2) for p in [blocker, *pending, *finished]]
        seen = {w.prompt_id: [] for w in watches}
        deadline = asyncio.get_running_loop().time() + 1.0
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            for w in watches:
                status = await w.next(timeout=left)
                if status is not None:
                    seen[w.prompt_id].append(status.state)
        for w in watches:
            w.close()
        await asyncio.sleep(0.05)
        return poller.rounds, seen, poller.running

    rounds, seen, still_running = asyncio.run(scenario())
    assert 4 <= rounds <= 8
    assert _count(standin, "/queue", before) == rounds
    # only the finished ones (a round that starts as the watches close asks for fewer)
    assert 3 * (rounds - 1) <= _count(standin, "/history", before) <= 3 * rounds
    assert set(seen[blocker]) == {PromptState.RUNNING}
    assert {s for p in pending for s in seen[p]} == {PromptState.PENDING}
    assert {s for p in finished for s in seen[p]} == {PromptState.SUCCESS}
    assert not still_running  # nobody registered: the poller ended
    hook.clear_queue()
    hook.cancel_prompt(blocker)


def test_queue_positions_match_the_protocol_core(hook, standin):
    blocker = hook.submit_prompt(slow_save(1.0, steps=10))["prompt_id"]
    wait_until(lambda: hook.get_prompt_status(blocker).state is PromptState.RUNNING)
    pending = [hook.submit_prompt(empty_save(f"hooktest/q{i}"))["prompt_id"] for i in range(4)]
    front = hook.submit_prompt(empty_save("hooktest/front"), front=True)["prompt_id"]
    queue = hook.get_queue()
    found = states.queue_statuses(queue, {blocker, front, *pending, "unknown"})
    for prompt_id in (blocker, front, *pending):
        assert found[prompt_id] == resolve_status(prompt_id, {}, queue)
    assert "unknown" not in found and found[front].queue_position == 0
    standin.wait_idle(10)


def test_each_watch_keeps_its_own_interval(hook, standin):
    blocker = hook.submit_prompt(slow_save(3.0, steps=30))["prompt_id"]
    wait_until(lambda: hook.get_prompt_status(blocker).state is PromptState.RUNNING)
    before = len(standin.requests)

    async def gaps(watch, until: float) -> list[float]:
        loop = asyncio.get_running_loop()
        times = []
        while loop.time() < until:
            if await watch.next(timeout=until - loop.time()) is not None:
                times.append(loop.time())
        watch.close()
        return [b - a for a, b in itertools.pairwise(times)]

    async def scenario():
        poller = poller_module.shared_poller(fast_settings(standin.url))
        until = asyncio.get_running_loop().time() + 1.6
        fast, slow = poller.watch(blocker, 0.1), poller.watch(blocker, 0.4)
        return await asyncio.gather(gaps(fast, until), gaps(slow, until))

    fast_gaps, slow_gaps = asyncio.run(scenario())
    assert len(fast_gaps) >= 10 and max(fast_gaps) <= 0.1 + 0.08
    assert 2 <= len(slow_gaps) <= 5 and max(slow_gaps) <= 0.4 + 0.08
    # the slow watch's rounds coincide with the fast one's: no extra /queue reads for it
    assert _count(standin, "/queue", before) <= len(fast_gaps) + 2
    hook.cancel_prompt(blocker)


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

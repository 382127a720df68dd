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
from airflow_comfy.hooks import comfyui_async
from airflow_comfy.hooks.comfyui_async import AsyncComfyUIClient
from airflow_comfy.protocol.states import PromptState
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
        a = comfyui_async._shared_client(settings)
        b = comfyui_async._shared_client(fast_settings(standin.url))
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
    assert f"GET {free_port_url}/history/p" in str(info.value) and "\n" not in str(info.value)


def test_non_json_and_wrong_shape():
    with (
        fake_http(200, b"<html>login</html>") as (url, _seen),
        pytest.raises(ComfyUIResponseError, match="instead of JSON"),
    ):
        asyncio.run(AsyncComfyUIClient(fast_settings(url)).get_object("/queue"))
    with (
        fake_http(200, b"[1]", "application/json") as (url, _seen),
        pytest.raises(ComfyUIResponseError, match="not an object"),
    ):
        asyncio.run(AsyncComfyUIClient(fast_settings(url)).get_object("/queue"))


def test_auth_headers_are_sent():
    with fake_http(200, b"{}", "application/json") as (url, seen):
        client = AsyncComfyUIClient(fast_settings(url, headers={"X-API-Key": "async-key-1"}))
        assert asyncio.run(client.get_object("/queue")) == {}
    assert seen[0]["headers"]["X-API-Key"] == "async-key-1"

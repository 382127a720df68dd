"""``ComfyUIClient`` and the hook over it: one immutable client per server, the request budget of a
blocking run, the node-catalogue cache, the jobs route under an ``/api`` prefix, cheap WebSocket reads."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from airflow_comfy.hooks import catalog
from airflow_comfy.hooks.comfyui import ComfyUIHook
from airflow_comfy.hooks.websocket import ComfyUIWebSocket
from airflow_comfy.protocol import urls
from airflow_comfy.protocol.ids import new_client_id
from airflow_comfy.protocol.states import PromptState
from airflow_comfy.testing import StandInServer
from hooks.hook_helpers import empty_save, fast_hook, fast_settings, slow_save


def test_a_blocking_websocket_run_makes_two_http_requests(hook: ComfyUIHook, standin: StandInServer) -> None:
    client = hook.client()
    client_id = new_client_id()
    socket = client.websocket(client_id).connect()
    before = len(standin.requests)
    answer = client.submit_prompt(slow_save(0.3, steps=3), client_id=client_id)
    # (a check_interval longer than any stall of a loaded machine: no silence triggers a status read)
    status = client.wait_for_prompt(
        answer["prompt_id"], client_id=client_id, websocket=socket, timeout=60, check_interval=30
    )
    assert status.state is PromptState.SUCCESS
    http = [(m, p) for m, p in standin.requests[before:] if p != "/ws"]
    assert http == [("POST", "/prompt"), ("GET", f"/history/{answer['prompt_id']}")]


def test_the_hook_never_changes_which_server_a_call_goes_to(standin: StandInServer) -> None:
    hook = fast_hook(standin.url)
    first = hook.client()
    hook.submit_prompt(empty_save())
    assert hook.client() is first and hook.base_url == standin.url
    assert hook.client(standin.url + "/") is first  # one client per server, whatever the spelling
    with pytest.raises(ValueError, match="not a server of connection"):
        hook.client("http://127.0.0.1:1")


def test_the_node_catalogue_is_fetched_once_per_process_and_server(
    hook: ComfyUIHook, standin: StandInServer
) -> None:
    catalog.forget()
    first = hook.client().get_object_info()
    other = fast_hook(standin.url)  # a new hook, as the next task of the worker would have
    assert other.get_object_info() is first  # never copied: readers must not mutate it
    assert sum(1 for _m, p in standin.requests if p == "/object_info") == 1


def test_the_node_catalogue_is_kept_on_disk_and_rechecked_by_its_stamp(
    hook: ComfyUIHook, standin: StandInServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_COMFY_CACHE_DIR", str(tmp_path))
    catalog.forget()
    fetched = hook.get_object_info()
    [cached] = (tmp_path / "object_info").iterdir()
    assert json.loads(cached.read_text())["base_url"] == standin.url
    catalog.forget()  # a new process: only the disk is left
    monkeypatch.setattr(catalog, "RECHECK_AFTER", 0.0)
    requests_before = len(standin.requests)
    assert fast_hook(standin.url).get_object_info() == fetched
    assert [p for _m, p in standin.requests[requests_before:]] == ["/system_stats"]  # stamp only
    monkeypatch.setattr(catalog, "MAX_AGE", 0.0)
    fast_hook(standin.url).get_object_info()
    assert "/object_info" in [p for _m, p in standin.requests[requests_before:]]


def test_the_jobs_route_is_not_doubled_under_an_api_prefix() -> None:
    assert (
        urls.endpoint("http://h:8188/api", urls.job_path("p", "cancel")) == "http://h:8188/api/jobs/p/cancel"
    )
    assert urls.endpoint("http://h:8188", urls.job_path("p", "cancel")) == "http://h:8188/api/jobs/p/cancel"
    assert urls.endpoint("http://h:8188/api", urls.QUEUE) == "http://h:8188/api/queue"


def test_cancel_through_an_api_prefix_reaches_the_server(standin: StandInServer) -> None:
    hook = ComfyUIHook(settings=fast_settings(standin.url + "/api"))
    answer = hook.submit_prompt(slow_save(5.0, steps=50))
    assert "404" not in hook.cancel_prompt(answer["prompt_id"])
    assert all(not p.startswith("/api/api") for _m, p in standin.requests)
    standin.wait_idle(10)


def test_progress_state_frames_are_dropped_unparsed(standin: StandInServer) -> None:
    hook = fast_hook(standin.url)
    client_id = new_client_id()
    with ComfyUIWebSocket(hook.settings, client_id) as socket:
        hook.submit_prompt(slow_save(0.2, steps=2), client_id=client_id)
        types = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            event = socket.recv(1.0)
            if event is None:
                continue
            types.append(getattr(event, "type", "binary"))
            if types[-1] == "executing" and event.data.get("node") is None:  # type: ignore[union-attr]
                break
    assert "progress_state" not in types and "execution_success" in types
    assert socket._ws is None  # closed on leaving the block


def test_the_connection_test_answers_at_once_without_retries() -> None:
    """A person waits at the screen: one request, no backoff (tasks keep their retries)."""
    from hooks.hook_helpers import fake_http

    with fake_http(503, b"{}", "application/json") as (url, seen):
        hook = ComfyUIHook(settings=fast_settings(url, max_retries=5))
        ok, message = hook.test_connection()
    assert not ok and "HTTP 503" in message
    assert len(seen) == 1

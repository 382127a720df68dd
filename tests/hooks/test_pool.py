"""Several servers behind one connection: parsing ``extra.hosts``, least-loaded choice, failover,
capability routing and staying on the chosen server — against two or three stand-in servers."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from airflow.sdk import Connection

from airflow_comfy.exceptions import ComfyUIConnectionError, ComfyUIWorkflowError
from airflow_comfy.hooks import pool
from airflow_comfy.hooks.comfyui import ComfyUIHook
from airflow_comfy.hooks.connection import settings_from_connection
from airflow_comfy.protocol.states import PromptState
from airflow_comfy.testing import StandInServer
from hooks.hook_helpers import empty_save, fast_settings, slow_save


def pool_hook(servers: list[StandInServer], **kwargs) -> ComfyUIHook:
    urls = [s.url for s in servers]
    settings = fast_settings(urls[0], servers=tuple(urls))
    return ComfyUIHook(settings=settings, **kwargs)


@pytest.fixture
def three(tmp_path: Path) -> Iterator[list[StandInServer]]:
    with ExitStack() as stack:
        yield [stack.enter_context(StandInServer(base_dir=tmp_path / f"s{i}")) for i in range(3)]


def test_hosts_extra_json_list_and_uri_text():
    conn = Connection(
        conn_id="p",
        conn_type="comfyui",
        host="gpu-1",
        port=8188,
        extra=json.dumps({"hosts": ["gpu-2", "http://gpu-3:9000", "gpu-1"]}),
    )
    settings = settings_from_connection(conn)
    assert settings.servers == ("http://gpu-1:8188", "http://gpu-2:8188", "http://gpu-3:9000")
    assert settings.base_url == "http://gpu-1:8188" and settings.is_pool
    uri = Connection(conn_id="u", uri="comfyui://:tok@gpu-1:8188/?hosts=gpu-2%3A8190%2Cgpu-3")
    assert settings_from_connection(uri).servers == (
        "http://gpu-1:8188",
        "http://gpu-2:8190",
        "http://gpu-3:8188",
    )
    pinned = settings.for_server("http://gpu-2:8188/")
    assert pinned.base_url == "http://gpu-2:8188" and pinned.servers == settings.servers
    assert pinned.auth_headers is settings.auth_headers
    with pytest.raises(ValueError, match="is not a server of connection 'p'"):
        settings.for_server("http://elsewhere:8188")


def test_pick_least_loaded_and_round_robin_on_ties():
    states = [
        pool.ServerState("a", 2),
        pool.ServerState("b", 0),
        pool.ServerState("c", 0),
        pool.ServerState("d", None, problem="unreachable"),
    ]
    assert [pool.pick_least_loaded(states, turn).url for turn in range(4)] == ["b", "c", "b", "c"]
    assert pool.pick_least_loaded([pool.ServerState("d", None, problem="x")], 0) is None


def test_submits_to_the_least_loaded_server_and_the_hook_never_changes(three):
    busy = three[0]
    for _ in range(2):
        ComfyUIHook(settings=fast_settings(busy.url)).submit_prompt(slow_save(2.0))
    hook = pool_hook(three)
    answer = hook.submit_prompt(empty_save("pool/one"))
    assert answer["server"] != busy.url and hook.base_url == three[0].url  # no pinning
    client = hook.client(answer["server"])
    assert client is hook.client(answer["server"]) and client.base_url == answer["server"]
    status = client.wait_for_prompt(answer["prompt_id"], mode="polling", check_interval=0.05, timeout=20)
    assert status.state is PromptState.SUCCESS
    served_by = next(s for s in three if s.url == answer["server"])
    assert answer["prompt_id"] in served_by.submissions
    assert all(answer["prompt_id"] not in s.submissions for s in three if s is not served_by)
    assert client.cancel_prompt(answer["prompt_id"]).startswith("nothing to do")
    assert hook.base_url == three[0].url


def test_ties_spread_over_idle_servers(three):
    chosen = Counter(pool_hook(three).choose().base_url for _ in range(9))
    assert set(chosen) == {s.url for s in three} and max(chosen.values()) == 3


def test_an_unreachable_server_is_skipped_with_the_reason_logged(three, caplog, capsys):
    down = three[0]
    down.faults.refuse_connections(True)
    hook = pool_hook(three)
    for _ in range(4):
        answer = pool_hook(three).submit_prompt(empty_save("pool/failover"))
        assert answer["server"] != down.url
    caplog.set_level(logging.DEBUG)
    hook.choose()
    assert f"Skipping ComfyUI server {down.url}: unreachable" in caplog.text + capsys.readouterr().out
    assert down.submissions == []


def test_no_server_usable_is_a_clear_error(three):
    for server in three:
        server.faults.refuse_connections(True)
    started = time.monotonic()
    with pytest.raises(
        ComfyUIConnectionError, match="No server of connection 'comfyui_test' is usable"
    ) as info:
        pool_hook(three).submit_prompt(empty_save())
    assert all(s.url in str(info.value) for s in three)
    assert time.monotonic() - started < 10


def test_capability_routing_sends_the_workflow_where_its_nodes_are(three, monkeypatch):
    hook = pool_hook(three)
    real = dict(hook.get_object_info())
    without_delay = frozenset(set(real) - {"StandInDelay"})
    monkeypatch.setattr(pool, "_NODE_TYPES", {})
    now = time.monotonic()
    pool._NODE_TYPES[three[0].url] = (now, without_delay)
    pool._NODE_TYPES[three[1].url] = (now, without_delay)
    pool._NODE_TYPES[three[2].url] = (now, frozenset(real))
    for _ in range(3):
        routed = pool_hook(three, capability_routing=True)
        assert routed.choose(slow_save(0.1)).base_url == three[2].url
    pool._NODE_TYPES[three[2].url] = (now, without_delay)
    with pytest.raises(ComfyUIWorkflowError, match="lacks node types StandInDelay") as info:
        pool_hook(three, capability_routing=True).choose(slow_save(0.1))
    assert str(info.value).count("StandInDelay") == 3


def test_required_node_types_of_api_and_ui_workflows():
    assert pool.required_node_types(empty_save()) == {"EmptyImage", "SaveImage"}
    ui = {
        "nodes": [
            {"type": "LoadImage", "mode": 0},
            {"type": "Note"},
            {"type": "Muted", "mode": 2},
            {"type": "sg-1"},
        ],
        "definitions": {"subgraphs": [{"id": "sg-1", "nodes": [{"type": "ImageInvert"}]}]},
    }
    assert pool.required_node_types(ui) == {"LoadImage", "ImageInvert"}


def test_locate_finds_the_server_that_has_the_prompt(three):
    target = three[1]
    answer = ComfyUIHook(settings=fast_settings(target.url)).submit_prompt(slow_save(0.5))
    hook = pool_hook(three)
    client, status = hook.locate(answer["prompt_id"])
    assert status.state in (PromptState.PENDING, PromptState.RUNNING, PromptState.SUCCESS)
    assert client is not None and client.base_url == target.url
    missing, status = pool_hook(three).locate("00000000-0000-4000-8000-000000000000")
    assert missing is None and status.state is PromptState.NOT_FOUND
    target.wait_idle(10)

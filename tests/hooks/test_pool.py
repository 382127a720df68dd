"""Several servers behind one connection: parsing ``extra.hosts``, least-loaded choice, failover,
capability routing and staying on the chosen server — against two or three stand-in servers."""

from __future__ import annotations

import json
import logging
import random
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
from hooks.hook_helpers import empty_save, fast_settings, gated_save, slow_save


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


@pytest.fixture(autouse=True)
def fresh_memories(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no server known dead, nothing in flight and a seeded choice."""
    monkeypatch.setattr(pool, "_DEAD", {})
    monkeypatch.setattr(pool, "_IN_FLIGHT", {})
    monkeypatch.setattr(pool, "_RANDOM", random.Random(7))


def test_pick_is_weighted_towards_the_least_loaded_and_never_unusable():
    states = [
        pool.ServerState("a", 1),
        pool.ServerState("b", 0),
        pool.ServerState("d", None, problem="unreachable"),
    ]
    rng = random.Random(1)
    picks = Counter(pool.pick(states, {}, rng).url for _ in range(2000))
    assert set(picks) == {"a", "b"}
    assert 0.15 < picks["a"] / 2000 < 0.35  # weights 1/4 and 1: about 20 %, never all on one server
    # This process's own submissions in flight count as load.
    flipped = Counter(pool.pick(states, {"b": 3}, rng).url for _ in range(2000))
    assert flipped["a"] > flipped["b"]
    assert pool.pick([pool.ServerState("d", None, problem="x")], {}, rng) is None


def test_own_submissions_count_until_a_later_survey_can_see_them():
    pool.reserve("a", now=10.0)
    pool.reserve("a", now=11.0)
    assert pool.in_flight("a", survey_started=12.0) == 2  # neither answered yet
    pool.landed("a", now=13.0)
    assert pool.in_flight("a", survey_started=12.0) == 2  # answered after that survey began
    assert pool.in_flight("a", survey_started=14.0) == 1  # a survey from 14 s sees the first one
    assert pool.in_flight("a", survey_started=11.0 + pool.IN_FLIGHT_TTL) == 0  # expired


def test_workers_starting_together_do_not_all_pick_one_server(three):
    """Herding: every choice reads the same (stale) loads; they still spread."""
    busy = three[0]
    ComfyUIHook(settings=fast_settings(busy.url)).submit_prompt(gated_save("busy"))
    busy.gates.wait_blocked("busy")  # busy until the test is done with it
    busy_states = pool.survey(pool_hook(three).settings)
    assert [s.queue_remaining for s in busy_states] == [1, 0, 0]
    chosen = Counter(pool.pick(busy_states, {}, pool._RANDOM).url for _ in range(8))
    assert max(chosen.values()) < 8 and len(chosen) >= 2  # a strict least-loaded choice sends all 8 to one
    # In one process, choices not yet submitted count: nine choices spread three by three or so.
    spread = Counter(pool_hook(three[1:]).choose().base_url for _ in range(8))
    assert set(spread) == {three[1].url, three[2].url} and max(spread.values()) <= 5
    busy.gates.release("busy")
    busy.wait_idle(10)


def test_submits_to_the_least_loaded_server_and_the_hook_never_changes(three):
    busy = three[0]
    for _ in range(2):
        ComfyUIHook(settings=fast_settings(busy.url)).submit_prompt(gated_save("busy"))
    busy.gates.wait_blocked("busy")  # one running, one pending there until the end
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
    busy.gates.release("busy")


def test_ties_spread_over_idle_servers(three):
    chosen = Counter(pool_hook(three).choose().base_url for _ in range(9))
    assert set(chosen) == {s.url for s in three} and max(chosen.values()) <= 5


def test_a_server_that_refuses_is_skipped_for_a_while_with_one_line(three, caplog, capsys, monkeypatch):
    down = three[0]
    down.faults.refuse_connections(True)
    caplog.set_level(logging.INFO)
    pool_hook(three).choose()
    assert down.url in pool._DEAD
    caplog.clear()
    capsys.readouterr()
    missing, _ = pool_hook(three).locate("00000000-0000-4000-8000-000000000000")
    assert missing is None
    shown = [r.getMessage() for r in caplog.records] + capsys.readouterr().out.splitlines()
    lines = [line for line in shown if down.url in line]
    assert len(lines) == 1 and "refused a connection" in lines[0] and "not asked again" in lines[0], lines
    states = pool.survey(pool_hook(three).settings)
    assert "not asked again" in (states[0].problem or "")
    # It expires: then the server is asked again, and once it answers it is alive.
    down.faults.refuse_connections(False)
    monkeypatch.setattr(pool, "DEAD_FOR", 0.0)
    assert pool.survey(pool_hook(three).settings)[0].eligible
    assert down.url not in pool._DEAD


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
    # Generous (many times a loaded machine's time): a clear error after the retries, not after
    # waiting out the start's unreachable grace (300 s by default).
    assert time.monotonic() - started < 60


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

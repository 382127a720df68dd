"""Operators, sensor and trigger on a connection with several servers (``extra.hosts``).

Three stand-in servers behind one connection: prompts spread over the pool, a dead server is
skipped, and waiting, downloading, cancelling and re-attaching on retry all go to the server the
prompt was submitted to — never to another one.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_comfy.operators.comfyui import ComfyUIPromptOperator
from airflow_comfy.sensors.comfyui import ComfyUIPromptSensor
from airflow_comfy.testing import StandInServer
from operators.support import (
    FAST_EXTRA,
    FakeTI,
    delay_workflow,
    gated_workflow,
    image_workflow,
    make_context,
    submit,
    wait_state,
    wait_until,
)

FAST = {"check_interval": 0.1, "lost_grace": 0.5, "timeout": 30}


class HeaviestFirst:
    """A stand-in for the pool's random choice: the most weighted server, ties in turn."""

    def __init__(self) -> None:
        self.turn = 0

    def choices(self, population: list[Any], weights: list[float]) -> list[Any]:
        best = [item for item, weight in zip(population, weights, strict=True) if weight == max(weights)]
        self.turn += 1
        return [best[self.turn % len(best)]]


@pytest.fixture(autouse=True)
def deterministic_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about where work and outputs go, not about the random spread (that is
    tests/hooks/test_pool.py): the least loaded server is chosen, ties in turn."""
    from airflow_comfy.hooks import pool

    monkeypatch.setattr(pool, "_RANDOM", HeaviestFirst())


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[StandInServer]]:
    with ExitStack() as stack:
        yield [stack.enter_context(StandInServer(base_dir=tmp_path / f"gpu{i}")) for i in range(3)]


@pytest.fixture
def pool_conn(servers: list[StandInServer], monkeypatch: pytest.MonkeyPatch, request: Any) -> str:
    conn_id = f"comfy_pool_{abs(hash(request.node.name)) % 100000}"
    extra = {**FAST_EXTRA, "hosts": [s.url for s in servers[1:]]}
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps({"conn_type": "comfyui", "host": servers[0].url, "extra": extra}),
    )
    return conn_id


def op(
    conn_id: str, workflow: dict[str, Any], task_id: str = "render", **kwargs: Any
) -> ComfyUIPromptOperator:
    return ComfyUIPromptOperator(
        task_id=task_id, workflow=workflow, comfyui_conn_id=conn_id, **{**FAST, **kwargs}
    )


def where(servers: list[StandInServer], prompt_id: str) -> StandInServer:
    [server] = [s for s in servers if prompt_id in s.submissions]
    return server


def test_a_mapped_batch_of_twenty_spreads_over_three_servers(servers, pool_conn):
    placed = []
    task = op(pool_conn, delay_workflow(5.0), wait_for_completion=False)
    for map_index in range(20):  # what .expand() runs: one task instance per map index
        ti = FakeTI(map_index=map_index)
        prompt_id = task.execute(make_context(ti))
        placed.append(where(servers, prompt_id).url)
        assert ti.xcoms["comfyui_url"] == placed[-1]  # the chosen server is recorded for the task
    assert sorted(Counter(placed).values()) == [6, 7, 7]
    for server in servers:
        server.faults.refuse_connections(True)  # end the slow queue quickly: the fixture stops them


def test_waiting_and_outputs_come_from_the_chosen_server(servers, pool_conn, tmp_path):
    for server in servers[:2]:
        submit(server, gated_workflow("busy"))  # busy until released, however long the task takes
    ti = FakeTI()
    paths = op(pool_conn, image_workflow("pool/out"), output_dir=tmp_path / "out").execute(make_context(ti))
    for server in servers[:2]:
        server.gates.release("busy")
    assert ti.xcoms["comfyui_url"] == servers[2].url
    assert ti.xcoms["outputs"][0]["view_url"].startswith(servers[2].url + "/view?")
    assert [Path(p).name for p in paths] == ["out_00001_.png"] and Path(paths[0]).is_file()


def test_a_refusing_server_is_skipped(servers, pool_conn):
    servers[0].faults.refuse_connections(True)
    for i in range(4):
        ti = FakeTI(f"t{i}")
        op(pool_conn, image_workflow(color=i), task_id=ti.task_id).execute(make_context(ti))
        assert ti.xcoms["comfyui_url"] != servers[0].url
    assert servers[0].submissions == []


def test_retry_reattaches_on_the_server_of_the_first_try(servers, pool_conn):
    first = FakeTI()
    prompt_id = op(pool_conn, delay_workflow(0.6), wait_for_completion=False).execute(make_context(first))
    home = where(servers, prompt_id)
    second = FakeTI(try_number=2)
    paths = op(pool_conn, delay_workflow(0.6)).execute(make_context(second))
    assert second.xcoms["prompt_id"] == prompt_id and second.xcoms["comfyui_url"] == home.url
    assert sum(len(s.submissions) for s in servers) == 1
    assert paths == [f"output/{p}" for p in ["t/slow_00001_.png"]]


def test_kill_cancels_on_the_chosen_server_only(servers, pool_conn, in_thread):
    task = op(pool_conn, delay_workflow(10.0, steps=100))
    ti = FakeTI()
    running = in_thread(task.execute, make_context(ti))
    wait_until(lambda: "prompt_id" in ti.xcoms, what="the submission")
    home = where(servers, ti.xcoms["prompt_id"])
    wait_state(home, ti.xcoms["prompt_id"], "running")
    task.on_kill()
    with pytest.raises(Exception, match="the task was killed"):
        running.result(timeout=20)
    for server in servers:
        interrupts = [r for r in server.requests if r == ("POST", "/interrupt")]
        assert len(interrupts) == (1 if server is home else 0)


def test_deferred_wait_polls_the_chosen_server(servers, pool_conn, tmp_path):
    for server in servers[:2]:
        submit(server, gated_workflow("busy"))  # busy until the test ends
    task = op(pool_conn, image_workflow("pool/deferred"), deferrable=True, output_dir=tmp_path / "out")
    ti = FakeTI()
    with pytest.raises(TaskDeferred) as deferred:
        task.execute(make_context(ti))
    trigger = deferred.value.trigger
    assert trigger.server == servers[2].url == ti.xcoms["comfyui_url"]
    assert json.loads(json.dumps(trigger.serialize()[1]))["server"] == servers[2].url

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    event = asyncio.run(asyncio.wait_for(first_event(), 30))
    assert event["status"] == "success" and event["base_url"] == servers[2].url
    fresh = op(pool_conn, image_workflow("pool/deferred"), deferrable=True, output_dir=tmp_path / "out")
    [path] = fresh.execute_complete(make_context(FakeTI()), event)  # a new process after the deferral
    assert Path(path).is_file()


def test_sensor_finds_the_prompt_on_its_server(servers, pool_conn):
    prompt_id = submit(servers[1], image_workflow("pool/sensed"))
    servers[1].wait_idle(10)
    sensor = ComfyUIPromptSensor(
        task_id="wait", prompt_id=prompt_id, comfyui_conn_id=pool_conn, poke_interval=0.1
    )
    assert sensor.execute(make_context(FakeTI("wait"))) == ["output/pool/sensed_00001_.png"]
    pinned = ComfyUIPromptSensor(
        task_id="wait2",
        prompt_id=prompt_id,
        comfyui_conn_id=pool_conn,
        poke_interval=0.1,
        server=servers[1].url,
    )
    assert pinned.hook.base_url == servers[1].url


def test_a_retry_never_submits_elsewhere_while_a_server_cannot_be_asked(servers, pool_conn):
    from airflow_comfy.exceptions import ComfyUIConnectionError

    prompt_id = op(pool_conn, delay_workflow(5.0), wait_for_completion=False).execute(make_context(FakeTI()))
    home = where(servers, prompt_id)
    home.faults.refuse_connections(True)
    with pytest.raises(ComfyUIConnectionError, match="Not submitting it elsewhere"):
        op(pool_conn, delay_workflow(5.0), unreachable_grace=0.5).execute(make_context(FakeTI(try_number=2)))
    assert sum(len(s.submissions) for s in servers) == 1
    # A first try is not held back by a server that is down: it goes elsewhere.
    other = FakeTI("other_task")
    op(pool_conn, image_workflow(), task_id="other_task").execute(make_context(other))
    assert other.xcoms["comfyui_url"] != home.url


def test_downloads_of_a_pool_are_kept_apart_per_server(servers, pool_conn, tmp_path):
    paths = []
    for map_index in range(3):  # idle servers, round robin: one prompt each, all named ..._00001_.png
        ti = FakeTI(map_index=map_index)
        paths += op(pool_conn, image_workflow("same/name"), output_dir=tmp_path).execute(make_context(ti))
    assert len(set(paths)) == 3 and all(Path(p).is_file() for p in paths)
    assert {Path(p).name for p in paths} == {"name_00001_.png"}
    assert {Path(p).relative_to(tmp_path).parts[0] for p in paths} == {
        s.url.removeprefix("http://").replace(":", "_") for s in servers
    }


def test_cancel_operator_finds_the_prompt_on_its_server(servers, pool_conn):
    from airflow_comfy.operators.comfyui import ComfyUICancelPromptOperator

    prompt_id = submit(servers[2], delay_workflow(10.0, steps=100))
    wait_state(servers[2], prompt_id, "running")
    done = ComfyUICancelPromptOperator(
        task_id="cancel", prompt_id=prompt_id, comfyui_conn_id=pool_conn
    ).execute(make_context(FakeTI("cancel")))
    assert done == "interrupted"
    assert [r for r in servers[2].requests if r == ("POST", "/interrupt")] == [("POST", "/interrupt")]
    assert all(("POST", "/interrupt") not in s.requests for s in servers[:2])


def test_deferrable_sensor_on_a_pool_watches_the_server_that_has_the_prompt(servers, pool_conn):
    prompt_id = submit(servers[1], delay_workflow(5.0))
    sensor = ComfyUIPromptSensor(
        task_id="wait", prompt_id=prompt_id, comfyui_conn_id=pool_conn, poke_interval=0.1, deferrable=True
    )
    ti = FakeTI("wait")
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(make_context(ti))
    assert deferred.value.trigger.server == servers[1].url == ti.xcoms["comfyui_url"]


def test_sensor_on_a_pool_does_not_call_an_unreachable_server_lost(servers, pool_conn):
    from airflow_comfy.exceptions import ComfyUIConnectionError

    prompt_id = submit(servers[1], delay_workflow(5.0))
    servers[1].faults.refuse_connections(True)
    sensor = ComfyUIPromptSensor(
        task_id="wait", prompt_id=prompt_id, comfyui_conn_id=pool_conn, poke_interval=0.1, lost_grace=0.2
    )
    with pytest.raises(ComfyUIConnectionError, match="could not be asked"):
        sensor.poke(make_context(FakeTI("wait")))


def test_free_operator_frees_every_server_and_reports_the_failures(servers, pool_conn):
    from airflow_comfy.exceptions import ComfyUIError
    from airflow_comfy.operators.comfyui import ComfyUIFreeOperator

    servers[0].faults.refuse_connections(True)
    with pytest.raises(ComfyUIError, match=r"/free failed on 1 server\(s\)"):
        ComfyUIFreeOperator(task_id="free", comfyui_conn_id=pool_conn).execute(make_context(FakeTI("free")))
    assert all(("POST", "/free") in s.requests for s in servers[1:])

"""Shared helpers for the operator, sensor and trigger tests (imported as ``operators.support``).

- small API-format workflows the stand-in runs (plain, slow, failing);
- :class:`FakeTI` + :func:`make_context`: the part of the task context ``airflow_comfy.run`` reads
  (``ti.dag_id/run_id/task_id/map_index/try_number`` and ``ti.xcom_push``), recording every push;
- the ``comfy_conn`` fixture: a ``comfyui`` connection pointing at the test's stand-in.

How the connection resolves outside a task: ``ComfyUIHook`` calls ``BaseHook.get_connection`` →
``Connection.get``; without a supervisor (no task runner) the Task SDK walks its configured secrets
backends, the first being the environment-variable backend, so ``AIRFLOW_CONN_<ID>`` set with
``monkeypatch.setenv`` (JSON form) is found in tests as in the triggerer (``aget_connection``).
Each test uses its own connection id, so no cached URI of an earlier test's server can be reused.

Invariant: every wait here is bounded and raises on timeout; threads started here are joined.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from airflow_comfy.hooks.comfyui import ComfyUIHook
from airflow_comfy.hooks.connection import ComfyUISettings
from airflow_comfy.testing import StandInServer

FAST_EXTRA = {
    "max_retries": 3,
    "retry_min_wait": 0.05,
    "retry_max_wait": 0.2,
    "connect_timeout": 2,
    "read_timeout": 15,
}
_COUNTER = itertools.count()


# --- workflows ----------------------------------------------------------------------------------


def image_workflow(prefix: str = "t/img", color: int = 0x336699, size: int = 16) -> dict[str, Any]:
    """EmptyImage → SaveImage: runs in milliseconds on the stand-in, one output file."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": 1, "color": color},
        },
        "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def delay_workflow(seconds: float, prefix: str = "t/slow", steps: int = 10, color: int = 1) -> dict[str, Any]:
    """EmptyImage → StandInDelay (``seconds``, interruptible per step) → SaveImage."""
    workflow = image_workflow(prefix, color=color)
    workflow["2"] = {
        "class_type": "StandInDelay",
        "inputs": {"image": ["1", 0], "seconds": seconds, "steps": steps},
    }
    workflow["9"]["inputs"]["images"] = ["2", 0]
    return workflow


def gated_workflow(gate: str, prefix: str = "t/gated") -> dict[str, Any]:
    """EmptyImage → StandInGate(gate) → SaveImage: runs until the test calls ``server.gates.release(gate)``.

    Where a prompt must still be running (or others still queued behind it) when the test acts.
    """
    workflow = image_workflow(prefix)
    workflow["2"] = {"class_type": "StandInGate", "inputs": {"image": ["1", 0], "gate": gate}}
    workflow["9"]["inputs"]["images"] = ["2", 0]
    return workflow


def fail_workflow(message: str = "the GPU melted", prefix: str = "t/fail") -> dict[str, Any]:
    """EmptyImage → StandInFail (raises ``RuntimeError(message)`` in node 5) → SaveImage."""
    workflow = image_workflow(prefix)
    workflow["5"] = {"class_type": "StandInFail", "inputs": {"image": ["1", 0], "message": message}}
    workflow["9"]["inputs"]["images"] = ["5", 0]
    return workflow


# --- task context ---------------------------------------------------------------------------------


class FakeTI:
    """What the operator and sensor read from ``context["ti"]``; records every ``xcom_push``."""

    def __init__(
        self,
        task_id: str = "render",
        *,
        dag_id: str = "test_dag",
        run_id: str = "manual__2026-01-01T00:00:00+00:00",
        map_index: int = -1,
        try_number: int = 1,
        on_push: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.dag_id, self.run_id, self.task_id = dag_id, run_id, task_id
        self.map_index, self.try_number = map_index, try_number
        self.pushes: list[tuple[str, Any]] = []
        self._on_push = on_push

    def xcom_push(self, key: str, value: Any) -> None:
        json.dumps(value)  # XCom values must be JSON-safe
        self.pushes.append((key, value))
        if self._on_push is not None:
            self._on_push(key, value)

    @property
    def xcoms(self) -> dict[str, Any]:
        return dict(self.pushes)


def make_context(ti: FakeTI) -> Any:
    return {"ti": ti}


# --- server access ------------------------------------------------------------------------------


def direct_hook(server: StandInServer) -> ComfyUIHook:
    """A hook built from settings (no connection lookup), for arranging and inspecting the server."""
    return ComfyUIHook(settings=ComfyUISettings(conn_id="direct", base_url=server.url, max_retries=1))


def submit(server: StandInServer, workflow: dict[str, Any]) -> str:
    """Submit ``workflow`` as some other user would; returns its prompt id."""
    return str(direct_hook(server).submit_prompt(workflow)["prompt_id"])


def state_of(server: StandInServer, prompt_id: str) -> str:
    return direct_hook(server).get_prompt_status(prompt_id).state.value


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(0.02)


def wait_state(server: StandInServer, prompt_id: str, state: str, timeout: float = 15.0) -> None:
    wait_until(lambda: state_of(server, prompt_id) == state, timeout, f"prompt {prompt_id} {state}")


async def first_event(trigger: Any, timeout: float = 60.0) -> dict[str, Any]:
    """The payload of the first event ``trigger.run()`` yields, within ``timeout`` seconds."""

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return await asyncio.wait_for(first(), timeout)


@pytest.fixture
def in_thread() -> Iterator[Callable[..., Future[Any]]]:
    """Run a callable in a worker thread; the pool is joined (bounded by the callables) at teardown."""
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="comfy-test")
    futures: list[Future[Any]] = []

    def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        future = pool.submit(fn, *args, **kwargs)
        futures.append(future)
        return future

    yield run
    for future in futures:
        with contextlib.suppress(Exception):  # tests assert on outcomes; here only join the threads
            future.result(timeout=60)
    pool.shutdown(wait=True)
    assert not [t for t in threading.enumerate() if t.name.startswith("comfy-test")]


@pytest.fixture
def comfy_conn(standin: StandInServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh ``comfyui`` connection id pointing at this test's stand-in (fast retries)."""
    conn_id = f"comfy_test_{next(_COUNTER)}_{standin.port}"
    connection = {"conn_type": "comfyui", "host": standin.url, "extra": FAST_EXTRA}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    return conn_id

"""``ComfyUIBatchOperator`` (blocking and deferred), its trigger, and ``run_batch``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from batch.support import FAST, gate_workflow, manifest_lines

from airflow_comfy.operators.batch import ComfyUIBatchOperator
from airflow_comfy.taskflow import run_batch
from airflow_comfy.testing import StandInServer
from airflow_comfy.triggers.batch import ComfyUIBatchTrigger
from operators.support import FakeTI, first_event, image_workflow, make_context


def _op(conn_id: str, items: Any, out: Path, **kwargs: Any) -> ComfyUIBatchOperator:
    defaults = {"workflow": image_workflow("b/op"), **FAST}
    return ComfyUIBatchOperator(
        task_id="batch", items=items, output_dir=str(out), comfyui_conn_id=conn_id, **{**defaults, **kwargs}
    )


def test_the_blocking_operator_returns_counts_and_the_manifest(comfy_conn: str, tmp_path: Path) -> None:
    items = [{"key": f"k{n}", "1.color": n} for n in range(4)]
    value = _op(comfy_conn, items, tmp_path / "out").execute(make_context(FakeTI("batch")))
    assert value == {
        "manifest": f"{tmp_path / 'out'}/manifest.jsonl",
        "total": 4,
        "succeeded": 4,
        "failed": 0,
        "finished_earlier": 0,
        "errors": [],
    }
    json.dumps(value)


def test_the_deferred_operator_cycles_until_every_item_is_done(
    comfy_conn: str, standin: StandInServer, tmp_path: Path
) -> None:
    ti = FakeTI("batch")
    op = _op(comfy_conn, [{"key": f"k{n}", "2.gate": f"g{n}"} for n in range(5)], tmp_path / "out",
             workflow=gate_workflow(), deferrable=True, max_in_flight=2, progress_interval=30)  # fmt: skip
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(make_context(ti))
    cycles, value = 0, None
    while value is None:
        cycles += 1
        assert cycles < 20
        trigger = deferred.value.trigger
        assert isinstance(trigger, ComfyUIBatchTrigger) and deferred.value.method_name == "execute_complete"
        classpath, kwargs = trigger.serialize()
        assert classpath == "airflow_comfy.triggers.batch.ComfyUIBatchTrigger"
        in_flight = [pid for ids in kwargs["prompts"].values() for pid in ids]
        assert 1 <= len(in_flight) <= 2 and len(json.dumps(kwargs)) < 2000  # no items in the kwargs
        for n in range(5):
            if f"g{n}" and len(standin.submissions) > n:
                standin.gates.release(f"g{n}")
        event = asyncio.run(first_event(ComfyUIBatchTrigger(**kwargs)))
        assert event["status"] in ("changed", "wake")
        try:
            value = op.execute_complete(make_context(ti), event)
        except TaskDeferred as again:
            deferred = pytest.ExceptionInfo.from_exc_info((type(again), again, again.__traceback__))
    assert value["succeeded"] == 5 and len(standin.submissions) == 5
    assert sorted(line["key"] for line in manifest_lines(tmp_path / "out")) == [f"k{n}" for n in range(5)]


def test_an_unexpected_event_is_refused(comfy_conn: str, tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowException

    with pytest.raises(AirflowException, match="Unexpected event"):
        _op(comfy_conn, [], tmp_path).execute_complete(make_context(FakeTI("batch")), {"status": "error"})


def test_a_rejected_workflow_fails_without_retries(
    comfy_conn: str, standin: StandInServer, tmp_path: Path
) -> None:
    workflow = image_workflow()
    workflow["1"]["inputs"]["width"] = -3
    with pytest.raises(AirflowFailException, match="EmptyImage"):
        _op(comfy_conn, [{"key": "a"}], tmp_path, workflow=workflow).execute(make_context(FakeTI("batch")))
    assert standin.submissions == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_in_flight": 0}, "max_in_flight must be at least 1"),
        ({"max_failed": -1}, "max_failed must be"),
        ({"output_dir": ""}, "output_dir is required"),
        ({"items": {"a": 1}}, "items must be a list"),
    ],
)
def test_wrong_parameters_fail_when_the_dag_is_parsed(kwargs: dict[str, Any], message: str) -> None:
    arguments = {"items": [], "output_dir": "/tmp/x", **kwargs}
    with pytest.raises(ValueError, match=message):
        ComfyUIBatchOperator(task_id="b", workflow={}, **arguments)


def test_run_batch_in_a_task(comfy_conn: str, standin: StandInServer, tmp_path: Path) -> None:
    value = run_batch(
        image_workflow("b/tf"), [{"key": "a"}, {"key": "b"}], tmp_path / "out", comfyui_conn_id=comfy_conn,
        context=make_context(FakeTI("tf")), **FAST,
    )  # fmt: skip
    assert value["succeeded"] == 2 and value["manifest"].endswith("manifest.jsonl")
    with pytest.raises(TypeError, match="deferrable"):
        run_batch({}, [], tmp_path, deferrable=True, context=make_context(FakeTI()))


def test_one_asset_event_per_batch_carries_the_manifest(comfy_conn: str, tmp_path: Path) -> None:
    from collections import defaultdict
    from types import SimpleNamespace

    from airflow.sdk import Asset

    asset = Asset("s3://renders/products")
    op = _op(comfy_conn, [{"key": "a"}], tmp_path / "out", outlets=[asset])
    events: dict[Any, Any] = defaultdict(lambda: SimpleNamespace(extra={}))
    op.execute({"ti": FakeTI("batch"), "task": op, "outlet_events": events})
    assert events[asset].extra == {
        "manifest": f"{tmp_path / 'out'}/manifest.jsonl", "total": 1, "succeeded": 1, "failed": 0,
    }  # fmt: skip


def test_items_that_can_be_read_only_once_are_refused() -> None:
    with pytest.raises(ValueError, match="not generator"):
        ComfyUIBatchOperator(
            task_id="b", workflow={}, items=({"key": n} for n in range(3)), output_dir="/tmp/x"
        )

"""``airflow_comfy.run``, ``.prepare``, ``.xcoms``: prompt ids, fail-fast, preparation, finishing, assets."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_comfy.exceptions import ComfyUIConnectionError, ComfyUIValidationError, ComfyUIWorkflowError
from airflow_comfy.hooks.comfyui import ComfyUIHook
from airflow_comfy.hooks.connection import ComfyUISettings, SecretHeaders
from airflow_comfy.prepare import prepare_for
from airflow_comfy.protocol.ids import is_canonical_uuid
from airflow_comfy.protocol.states import PromptState
from airflow_comfy.run import PromptRun, RunOptions, fail_fast, task_prompt_id
from airflow_comfy.testing import StandInServer
from airflow_comfy.workflows import load_workflow
from airflow_comfy.xcoms import asset_event_extra, emit_asset_events, push_prompt_xcoms

WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "tasks/x"}},
}


class TI:
    def __init__(self, **fields: Any) -> None:
        self.dag_id, self.run_id, self.task_id, self.map_index = "d", "r", "t", -1
        self.__dict__.update(fields)
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = json.loads(json.dumps(value))


@pytest.fixture
def hook(standin: StandInServer) -> Iterator[ComfyUIHook]:
    hook = ComfyUIHook(settings=ComfyUISettings(conn_id="t", base_url=standin.url, max_retries=1))
    yield hook
    hook.close()


def test_prompt_id_is_a_pure_function_of_the_task_instance_and_workflow() -> None:
    base = task_prompt_id({"ti": TI()}, WORKFLOW)  # type: ignore[arg-type]
    assert is_canonical_uuid(base) and base == base.lower()
    reordered = {"9": WORKFLOW["9"], "1": WORKFLOW["1"]}
    assert task_prompt_id({"ti": TI(try_number=5)}, reordered) == base  # type: ignore[arg-type]
    variants = [
        task_prompt_id({"ti": TI(**{field: value})}, WORKFLOW)  # type: ignore[arg-type]
        for field, value in (("dag_id", "d2"), ("run_id", "r2"), ("task_id", "t2"), ("map_index", 0))
    ]
    changed = json.loads(json.dumps(WORKFLOW))
    changed["1"]["inputs"]["color"] = 1
    variants.append(task_prompt_id({"ti": TI()}, changed))  # type: ignore[arg-type]
    assert len({base, *variants}) == 6


def test_fail_fast_turns_only_unfixable_errors_into_airflow_fail() -> None:
    with pytest.raises(AirflowFailException, match="bad"), fail_fast():
        raise ComfyUIValidationError("bad", error={}, node_errors={})
    with pytest.raises(AirflowFailException, match="unreadable"), fail_fast():
        raise ComfyUIWorkflowError("unreadable")
    # A connection error may pass on retry: it stays retryable.
    with pytest.raises(ComfyUIConnectionError), fail_fast():
        raise ComfyUIConnectionError("down")


def test_prompt_xcoms_have_no_credentials() -> None:
    settings = ComfyUISettings(
        conn_id="t",
        base_url="https://ann:pw-123@gpu.example.com/comfy",
        auth_headers=SecretHeaders({"Authorization": "Bearer tok-456"}),
    )
    ti = TI()
    push_prompt_xcoms({"ti": ti}, settings.base_url, "p-1")  # type: ignore[arg-type]
    assert ti.pushed == {
        "prompt_id": "p-1",
        "prompt_url": "https://gpu.example.com/comfy/history/p-1",
        "comfyui_url": "https://gpu.example.com/comfy",
    }


LOG = logging.getLogger("test")


def test_prepare_applies_overrides_and_validates_locally(hook: ComfyUIHook) -> None:
    client = hook.client()
    prepared = prepare_for(
        client, load_workflow(json.dumps(WORKFLOW)), {"1": {"color": 255}}, validate=True, log=LOG
    )
    assert prepared["1"]["inputs"]["color"] == 255
    broken = json.loads(json.dumps(WORKFLOW))
    broken["9"]["inputs"]["images"] = ["404", 0]
    with pytest.raises(ComfyUIValidationError):
        prepare_for(client, broken, None, validate=True, log=LOG)
    # Without validation nothing is fetched and the workflow is passed through as given.
    assert prepare_for(client, broken, None, validate=False, log=LOG) == broken


def test_a_cached_catalogue_never_rejects_a_workflow_the_server_accepts(hook: ComfyUIHook) -> None:
    client = hook.client()
    stale = {k: v for k, v in client.get_object_info().items() if k != "ImageInvert"}
    from airflow_comfy.hooks import catalog

    entry = catalog._MEMORY[client.base_url]
    catalog._MEMORY[client.base_url] = catalog._Entry(entry.stamp, entry.fetched_at, entry.checked_at, stale)
    workflow = {**WORKFLOW, "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}}
    assert prepare_for(client, workflow, None, validate=True, log=LOG)["2"]["class_type"] == "ImageInvert"
    assert "ImageInvert" in client.get_object_info()  # the fresh catalogue replaced the stale one


def test_prepare_rejects_unreadable_sources(tmp_path: Any) -> None:
    with pytest.raises(ComfyUIWorkflowError):
        load_workflow(str(tmp_path / "missing.json"))


def test_finish_pushes_outputs_and_texts(standin: StandInServer, hook: ComfyUIHook, tmp_path: Any) -> None:
    workflow = {
        **WORKFLOW,
        "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
    }
    prompt_id = hook.submit_prompt(workflow)["prompt_id"]
    status = hook.wait_for_prompt(prompt_id, mode="polling", timeout=15, check_interval=0.05)
    assert status.state is PromptState.SUCCESS
    ti = TI()
    log = logging.getLogger("test")

    run = PromptRun(hook, {"ti": ti}, log, RunOptions(prompt_id=prompt_id, output_dir=tmp_path))  # type: ignore[arg-type]
    paths = run.finish(status)

    assert paths == [str(tmp_path / "tasks" / "x_00001_.png")]
    assert [r["filename"] for r in ti.pushed["outputs"]] == ["x_00001_.png"]
    assert ti.pushed["texts"] == {"3": ["8"]}  # PreviewAny of the width


def test_asset_events_get_the_prompt_and_paths_merged_into_their_extra() -> None:
    from airflow.sdk import Asset, AssetAlias
    from airflow.sdk.execution_time.context import OutletEventAccessors

    renders, other, alias = Asset("comfyui://renders/a"), Asset("comfyui://renders/b"), AssetAlias("any")
    events = OutletEventAccessors()
    events[renders].extra["owner"] = "team-a"  # set by the DAG author: kept
    task = type("Task", (), {"outlets": [renders, alias, other]})()
    extra = asset_event_extra("p-1", ["/out/x.png"], [{"filename": "x.png"}], "http://h:8188")

    emitted = emit_asset_events({"task": task, "outlet_events": events}, extra)  # type: ignore[arg-type]

    assert emitted == [renders, other]
    assert events[renders].extra == {"owner": "team-a", **extra}
    assert events[other].extra == extra
    assert events[alias].extra == {} and events[alias].asset_alias_events == []
    # Outside a task (no outlet accessors) nothing is emitted, and nothing fails.
    assert emit_asset_events({"task": task}, extra) == []  # type: ignore[arg-type]


def test_asset_event_extra_is_json_safe_and_credential_free() -> None:
    from pathlib import PurePosixPath

    extra = asset_event_extra(
        "p-1",
        [PurePosixPath("/out/x.png")],  # type: ignore[list-item]
        ({"filename": "x.png", "view_url": "https://gpu.example.com/view?filename=x.png"},),
        "https://ann:pw-123@gpu.example.com/comfy",
    )
    assert extra == {
        "prompt_id": "p-1",
        "paths": ["/out/x.png"],
        "outputs": [{"filename": "x.png", "view_url": "https://gpu.example.com/view?filename=x.png"}],
        "comfyui_url": "https://gpu.example.com/comfy",
    }
    assert json.loads(json.dumps(extra)) == extra

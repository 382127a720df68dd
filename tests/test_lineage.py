"""Hook-level lineage: outputs and uploaded inputs reach Airflow's hook lineage collector.

Airflow hands out a no-op collector unless a plugin registers a lineage reader, so each test swaps
in a real ``HookLineageCollector`` (``airflow.sdk.lineage.get_hook_lineage_collector`` is looked up
at call time). Recording is best effort: a collector that raises, or an Airflow without one, must
not fail the task.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.lineage import HookLineageCollector

from airflow_comfy import lineage
from airflow_comfy.hooks.comfyui import ComfyUIHook
from airflow_comfy.hooks.connection import ComfyUISettings
from airflow_comfy.lineage import lineage_uri, record_lineage
from airflow_comfy.run import PromptRun, RunOptions
from airflow_comfy.testing import StandInServer
from airflow_comfy.uploads import upload_file

WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 5}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "lineage/x"}},
}


class TI:
    dag_id, run_id, task_id, map_index = "d", "r", "t", -1

    def xcom_push(self, key: str, value: Any) -> None:
        pass


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> HookLineageCollector:
    real = HookLineageCollector()
    monkeypatch.setattr("airflow.sdk.lineage.get_hook_lineage_collector", lambda: real)
    return real


@pytest.fixture
def hook(standin: StandInServer) -> Iterator[ComfyUIHook]:
    hook = ComfyUIHook(settings=ComfyUISettings(conn_id="lineage", base_url=standin.url, max_retries=1))
    yield hook
    hook.close()


def _finished(hook: ComfyUIHook) -> Any:
    prompt_id = hook.submit_prompt(WORKFLOW)["prompt_id"]
    return hook.wait_for_prompt(prompt_id, mode="polling", timeout=15, check_interval=0.05)


def _uris(infos: list[Any], hook: ComfyUIHook) -> list[str]:
    assert all(info.context is hook for info in infos)  # recorded as lineage of the hook
    return [info.asset.uri for info in infos]


def test_downloaded_outputs_are_file_uris(
    collector: HookLineageCollector, hook: ComfyUIHook, tmp_path: Path
) -> None:
    paths = _finish(hook, tmp_path, None)  # type: ignore[arg-type]

    assert paths == [str(tmp_path / "lineage" / "x_00001_.png")]
    lineage = collector.collected_assets
    assert _uris(lineage.outputs, hook) == [Path(paths[0]).as_uri()]
    assert lineage.inputs == []


def test_server_side_outputs_are_their_view_urls(
    collector: HookLineageCollector, hook: ComfyUIHook, standin: StandInServer
) -> None:
    _finish(hook, None, None)  # type: ignore[arg-type]

    [uri] = _uris(collector.collected_assets.outputs, hook)
    assert uri.startswith(f"{standin.url}/view?") and "filename=x_00001_.png" in uri and "type=output" in uri


def test_outputs_filtered_by_kind_are_not_recorded(
    collector: HookLineageCollector, hook: ComfyUIHook
) -> None:
    paths = _finish(hook, None, ["video"])  # type: ignore[arg-type]

    assert paths == []
    assert collector.collected_assets.outputs == []


def test_uploaded_inputs_are_recorded(
    collector: HookLineageCollector, hook: ComfyUIHook, tmp_path: Path
) -> None:
    from PIL import Image

    source = tmp_path / "cat.png"
    Image.new("RGB", (4, 4), (1, 2, 3)).save(source)

    answer = upload_file(hook, source, subfolder="lineage")
    upload_file(hook, f"file://{source}", subfolder="lineage")  # the same file, as a file:// URI

    assert answer["name"] == "cat.png"
    [info] = collector.collected_assets.inputs
    assert info.context is hook and info.asset.uri == source.as_uri() and info.count == 2


def test_object_storage_uris_are_kept_and_local_paths_become_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert lineage_uri("s3://bucket/renders/a.png") == "s3://bucket/renders/a.png"
    monkeypatch.chdir(tmp_path)
    assert lineage_uri("out/a.png") == (tmp_path / "out" / "a.png").as_uri()


def test_recording_never_fails_the_task(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def add_output_asset(self, **_: Any) -> None:
            raise RuntimeError("collector is down")

    monkeypatch.setattr("airflow.sdk.lineage.get_hook_lineage_collector", lambda: Broken())
    with caplog.at_level(logging.DEBUG, logger=lineage.__name__):
        record_lineage(object(), outputs=["file:///x.png"])
    assert "collector is down" in caplog.text

    monkeypatch.setattr(lineage, "hook_lineage_collector", lambda: None)  # an Airflow without lineage
    record_lineage(object(), outputs=["file:///x.png"])


def test_the_no_op_collector_of_an_airflow_without_lineage_readers(
    monkeypatch: pytest.MonkeyPatch, hook: ComfyUIHook, tmp_path: Path
) -> None:
    """Without a lineage reader plugin Airflow hands out a ``NoOpCollector``: the task still works."""
    from airflow.sdk.lineage import NoOpCollector

    no_op = NoOpCollector()
    monkeypatch.setattr("airflow.sdk.lineage.get_hook_lineage_collector", lambda: no_op)
    assert lineage.hook_lineage_collector() is no_op
    paths = _finish(hook, tmp_path, None)  # type: ignore[arg-type]
    assert [Path(p).name for p in paths] == ["x_00001_.png"] and not no_op.has_collected


def _finish(hook: ComfyUIHook, output_dir: Any, kinds: Any) -> list[str]:
    status = _finished(hook)
    options = RunOptions(prompt_id=status.prompt_id, output_dir=output_dir, output_kinds=kinds)
    return PromptRun(hook, {"ti": TI()}, logging.getLogger("t"), options).finish(status)  # type: ignore[arg-type]

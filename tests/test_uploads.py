"""Uploading input files and wiring them into LoadImage-like nodes, against the stand-in server."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from airflow_comfy.exceptions import ComfyUIWorkflowError
from airflow_comfy.hooks.comfyui import ComfyUIHook
from airflow_comfy.hooks.connection import ComfyUISettings
from airflow_comfy.protocol.states import PromptState
from airflow_comfy.uploads import upload_file, upload_input_name, uploaded_reference, wire_inputs


def _png(path, color=(10, 200, 30)):
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), color).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture
def hook(standin):
    return ComfyUIHook(settings=ComfyUISettings(conn_id="t", base_url=standin.url, max_retries=0))


def test_upload_dedups_same_bytes_and_renames_different_bytes(hook, tmp_path):
    first = upload_file(hook, _png(tmp_path / "cat.png"), subfolder="in")
    assert first == {"name": "cat.png", "subfolder": "in", "type": "input"}
    assert upload_file(hook, tmp_path / "cat.png", subfolder="in")["name"] == "cat.png"
    other = tmp_path / "other"
    other.mkdir()
    renamed = upload_file(hook, _png(other / "cat.png", color=(1, 2, 3)), subfolder="in")
    assert renamed["name"] == "cat (1).png"
    assert uploaded_reference(renamed) == "in/cat (1).png"
    assert uploaded_reference({"name": "x.png", "subfolder": ""}) == "x.png"


def test_file_uri_and_missing_file(hook, tmp_path):
    path = _png(tmp_path / "dog.png")
    assert upload_file(hook, f"file://{path}")["name"] == "dog.png"
    with pytest.raises(ComfyUIWorkflowError, match="no such file"):
        upload_file(hook, tmp_path / "missing.png")


def test_wired_upload_runs_through_load_image(hook, tmp_path, contract_workflows):
    workflow = dict(contract_workflows["load_invert_save"])
    workflow["1"] = {**workflow["1"], "_meta": {"title": "Source"}}
    wired, uploads = wire_inputs(
        hook, workflow, {"Source": _png(tmp_path / "src.png")}, object_info=hook.get_object_info()
    )
    assert wired["1"]["inputs"]["image"] == "airflow/src.png"
    assert uploads["Source"]["subfolder"] == "airflow"
    assert workflow["1"]["inputs"]["image"] != "airflow/src.png"  # the caller's workflow is untouched
    answer = hook.submit_prompt(wired)
    status = hook.wait_for_prompt(answer["prompt_id"], mode="polling", check_interval=0.05, timeout=30)
    assert status.state is PromptState.SUCCESS and len(status.outputs) == 1


def test_explicit_input_name_and_unknown_target(hook, tmp_path, contract_workflows):
    workflow = contract_workflows["load_invert_save"]
    wired, _ = wire_inputs(hook, workflow, {"1.image": _png(tmp_path / "a.png")})
    assert wired["1"]["inputs"]["image"] == "airflow/a.png"
    with pytest.raises(ComfyUIWorkflowError, match="matches no node"):
        wire_inputs(hook, workflow, {"Nope": tmp_path / "a.png"})


def test_upload_input_name_from_object_info_flags(hook):
    info = hook.get_object_info()
    assert upload_input_name(info["LoadImage"], {}) == "image"
    assert upload_input_name(None, {"audio": "x"}) == "audio"
    with pytest.raises(ComfyUIWorkflowError, match="cannot tell which input"):
        upload_input_name(None, {"seed": 1})

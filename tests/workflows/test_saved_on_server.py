"""A workflow saved on a server through the web UI's route runs end to end, on the stand-in and (live) ComfyUI.

Each test saves under a folder of its own (``workflows/airflow-comfy-test-<uuid>/``) with
POST /userdata, as the web UI's "Save" does, and deletes what it saved afterwards.
"""

from __future__ import annotations

import hashlib
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from airflow_comfy.hooks.comfyui import ComfyUIHook
from airflow_comfy.hooks.connection import ComfyUISettings
from airflow_comfy.protocol.states import PromptState
from airflow_comfy.workflows import load_saved_workflow, prepare_workflow, resolve_source, saved_identity

ROOT = Path(__file__).resolve().parents[2]
UI_WORKFLOW = ROOT / "dags_examples" / "workflows" / "invert_blur_ui.json"
INPUT_IMAGE = ROOT / "dags_examples" / "inputs" / "forest.png"


@pytest.fixture(params=["standin", pytest.param("live", marks=pytest.mark.live)])
def server_url(request: pytest.FixtureRequest) -> str:
    if request.param == "live":
        return request.getfixturevalue("live_url")
    return request.getfixturevalue("standin").url


@pytest.fixture
def saved(server_url: str) -> Iterator[tuple[str, list[str]]]:
    """A function saving bytes as ``workflows/<test folder>/<name>``; deletes them at the end."""
    folder = f"workflows/airflow-comfy-test-{uuid.uuid4().hex[:12]}"
    written: list[str] = []

    def save(name: str, content: bytes) -> str:
        path = f"{folder}/{name}"
        quoted = urllib.parse.quote(path, safe="")
        requests.post(
            f"{server_url}/api/userdata/{quoted}?overwrite=true", data=content, timeout=30
        ).raise_for_status()
        written.append(quoted)
        return path

    yield save, written  # type: ignore[misc]
    for quoted in written:
        requests.delete(f"{server_url}/api/userdata/{quoted}", timeout=30)


def test_saved_workflow_runs_end_to_end(server_url: str, saved) -> None:
    save, _ = saved
    content = UI_WORKFLOW.read_bytes()
    path = save("invert_blur.json", content)
    hook = ComfyUIHook(settings=ComfyUISettings(conn_id="saved", base_url=server_url, max_retries=1))
    assert path.removeprefix("workflows/") in hook.list_userdata("workflows")

    workflow, version = resolve_source(f"comfyui://{path}", hook, where=server_url)
    assert version is not None and version.sha256 == hashlib.sha256(content).hexdigest()
    image = hook.upload_image(INPUT_IMAGE, subfolder="airflow-comfy-test", overwrite=True)
    name = f"{image['subfolder']}/{image['name']}" if image["subfolder"] else image["name"]
    api = prepare_workflow(
        workflow,
        object_info=hook.get_object_info(),
        overrides={"Input Image.image": name, "Save.filename_prefix": "airflow-comfy-test/saved"},
    )
    answer = hook.submit_prompt(api)
    status = hook.wait_for_prompt(answer["prompt_id"], mode="polling", timeout=300, check_interval=0.5)
    assert status.state is PromptState.SUCCESS, status
    assert status.outputs


def test_resaved_workflow_is_another_version(server_url: str, saved) -> None:
    save, _ = saved
    hook = ComfyUIHook(settings=ComfyUISettings(conn_id="saved", base_url=server_url, max_retries=1))
    path = save("v.json", UI_WORKFLOW.read_bytes())
    first = saved_identity(load_saved_workflow(hook, f"comfyui://{path}"))
    assert saved_identity(load_saved_workflow(hook, f"comfyui://{path}")) == first
    save("v.json", UI_WORKFLOW.read_bytes().replace(b"etl/processed", b"etl/processed-v2"))
    assert saved_identity(load_saved_workflow(hook, f"comfyui://{path}")) != first


def test_missing_saved_workflow_lists_close_names(server_url: str, saved) -> None:
    from airflow_comfy.exceptions import ComfyUIWorkflowError

    save, _ = saved
    path = save("headshot.json", UI_WORKFLOW.read_bytes())
    hook = ComfyUIHook(settings=ComfyUISettings(conn_id="saved", base_url=server_url, max_retries=1))
    with pytest.raises(ComfyUIWorkflowError) as caught:
        load_saved_workflow(hook, f"comfyui://{path.replace('headshot', 'headshots')}", where=server_url)
    assert f"did you mean: {path}" in str(caught.value)

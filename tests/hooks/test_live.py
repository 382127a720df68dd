"""The hook against a real ComfyUI (COMFYUI_URL); skipped without it.

Other people may use the same server: every workflow gets a random colour (so nothing is served
from ComfyUI's cache) and only our own prompts are ever cancelled, by id.
"""

from __future__ import annotations

import copy
import random
import uuid

import pytest

from airflow_comfy.exceptions import ComfyUIExecutionError, ComfyUIValidationError
from airflow_comfy.protocol.states import PromptState
from hooks.hook_helpers import fast_hook

pytestmark = pytest.mark.live
WAIT = {"check_interval": 0.5, "lost_grace": 30, "timeout": 180}


def _fresh(workflow: dict) -> dict:
    workflow = copy.deepcopy(workflow)
    for node in workflow.values():
        if node["class_type"] == "EmptyImage":
            node["inputs"]["color"] = random.randint(0, 0xFFFFFF)
    return workflow


@pytest.fixture
def live_hook(live_url):
    hook = fast_hook(live_url, read_timeout=60)
    yield hook
    hook.close()


@pytest.mark.parametrize("mode", ["websocket", "polling"])
def test_live_submit_and_wait(live_hook, contract_workflows, tmp_path, mode):
    client_id = f"airflow-comfy-live-{uuid.uuid4().hex[:8]}"
    ws = live_hook.websocket(client_id).connect() if mode == "websocket" else None
    answer = live_hook.submit_prompt(_fresh(contract_workflows["scale_blur_save"]), client_id=client_id)
    status = live_hook.wait_for_prompt(
        answer["prompt_id"], client_id=client_id, websocket=ws, mode=mode, **WAIT
    )
    assert status.state is PromptState.SUCCESS
    (ref,) = status.outputs
    path = live_hook.download(ref, tmp_path)
    assert path.read_bytes()[:8] == bytes.fromhex("89504e470d0a1a0a")


def test_live_runtime_error(live_hook, contract_workflows):
    client_id = f"airflow-comfy-live-{uuid.uuid4().hex[:8]}"
    ws = live_hook.websocket(client_id).connect()
    answer = live_hook.submit_prompt(_fresh(contract_workflows["runtime_error"]), client_id=client_id)
    with pytest.raises(ComfyUIExecutionError) as info:
        live_hook.wait_for_prompt(answer["prompt_id"], client_id=client_id, websocket=ws, **WAIT)
    assert info.value.node_id == "2" and info.value.node_type == "ImageBlur"
    assert "failed in node 2 (ImageBlur): RuntimeError" in str(info.value)


def test_live_validation_error(live_hook, contract_workflows):
    workflow = _fresh(contract_workflows["scale_blur_save"])
    workflow["1"]["inputs"]["width"] = 99999
    workflow["2"]["inputs"]["upscale_method"] = "foo"
    with pytest.raises(ComfyUIValidationError) as info:
        live_hook.submit_prompt(workflow)
    message = str(info.value)
    assert "node 1 (EmptyImage): width: Value 99999 bigger than max of 16384 — width" in message
    assert "node 2 (ImageScale): upscale_method: Value not in list" in message


def test_live_cancel_pending(live_hook, contract_workflows):
    long = live_hook.submit_prompt(_fresh(contract_workflows["long_about_10s"]))["prompt_id"]
    try:
        victim = live_hook.submit_prompt(_fresh(contract_workflows["empty_save"]))["prompt_id"]
        assert live_hook.get_prompt_status(victim).state is PromptState.PENDING
        assert live_hook.cancel_prompt(victim) == "removed from the queue"
        assert live_hook.get_prompt_status(victim).state is PromptState.NOT_FOUND
    finally:
        live_hook.cancel_prompt(long)
    status = live_hook.wait_for_prompt(long, mode="polling", raise_on_failure=False, **WAIT)
    assert status.state in (PromptState.INTERRUPTED, PromptState.NOT_FOUND)
    assert live_hook.get_prompt_status(victim).state is PromptState.NOT_FOUND

"""Real web-UI saves, converted with a server's own /object_info, then sent to that server.

The only acceptable rejections are model files and input images the server does not have: every other input of the
converted workflow must pass ComfyUI's validation, as the frontend's submission would. Runs against
the stand-in (its /object_info is the one recorded from ComfyUI 0.3.64) and, when ``COMFYUI_URL`` is
set, against the real server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_comfy.exceptions import ComfyUIValidationError
from airflow_comfy.hooks.comfyui import ComfyUIHook
from airflow_comfy.hooks.connection import ComfyUISettings
from airflow_comfy.protocol.errors import format_validation_error
from airflow_comfy.protocol.states import PromptState
from airflow_comfy.workflows import prepare_workflow

UI_FILES = sorted((Path(__file__).parent / "data" / "ui").glob("*.json"))
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft")
# What the graph itself makes ComfyUI reject, whatever converts it (the frontend included):
GRAPH_FAULTS = {
    # frontend test graphs without any output node
    "note_with_ksampler": "prompt_no_outputs",
    "primitive_node": "prompt_no_outputs",
    "legacy_group_node": "prompt_no_outputs",  # two KSamplers in a group node, nothing else
    # PreviewImage 15 is fed only by the muted ImageInvert 14: muting drops the link
    "reroute_bypass_mute": {("15", "required_input_missing")},
}


def _missing_input_file(err: dict) -> bool:
    """An input image the template ships with but the server's input folder does not have."""
    return err.get("type") == "custom_validation_failed" and "Invalid image file" in str(err.get("details"))


@pytest.fixture(params=["standin", pytest.param("live", marks=pytest.mark.live)])
def server_url(request: pytest.FixtureRequest) -> str:
    if request.param == "live":
        return request.getfixturevalue("live_url")
    return request.getfixturevalue("standin").url


@pytest.mark.parametrize("path", UI_FILES, ids=[p.stem for p in UI_FILES])
def test_converted_workflow_passes_the_servers_validation_but_for_models(server_url: str, path: Path) -> None:
    hook = ComfyUIHook(settings=ComfyUISettings(conn_id="convert", base_url=server_url, max_retries=1))
    workflow = prepare_workflow(path, object_info=hook.get_object_info())
    expected = GRAPH_FAULTS.get(path.stem, set())
    try:
        answer = hook.submit_prompt(workflow)
    except ComfyUIValidationError as rejected:
        if isinstance(expected, str):
            assert rejected.error["type"] == expected, str(rejected)
            return
        problems = [
            (node_id, err)
            for node_id, entry in rejected.node_errors.items()
            for err in entry.get("errors") or []
            if (node_id, err.get("type")) not in expected
        ]
        assert problems, format_validation_error(
            {"error": rejected.error, "node_errors": rejected.node_errors}
        )
        models = 0
        for node_id, err in problems:
            received = str((err.get("extra_info") or {}).get("received_value", ""))
            if _missing_input_file(err):
                continue
            assert err["type"] == "value_not_in_list" and received.lower().endswith(MODEL_SUFFIXES), (
                f"node {node_id}: {err}"
            )
            models += 1
        assert not models or "not installed on that ComfyUI server" in str(rejected)
        return
    assert not isinstance(expected, str), f"{path.stem} has no output node, yet the server accepted it"
    # Accepted (a server that has the models): do not keep its GPU busy for a test.
    status = hook.get_prompt_status(answer["prompt_id"])
    if status.state in (PromptState.PENDING, PromptState.RUNNING):
        hook.cancel_prompt(answer["prompt_id"])

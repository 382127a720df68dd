"""Contract: server information routes (/system_stats, /object_info, /models, /features, /api/...)."""

from __future__ import annotations

import uuid

import pytest

from .checks import WORKFLOWS, check_response, workflow
from .clients import Comfy
from .shapes import assert_shape, load

pytestmark = pytest.mark.timeout(240)

# --------------------------------------------------------------------------------------------------
# server info


@pytest.mark.parametrize(
    "name",
    [
        "system_stats",
        "prompt_get",
        "embeddings",
        "models",
        "models_checkpoints",
        "models_unknown_folder",
        "object_info_SaveImage",
        "object_info_ImageBlur",
        "object_info_NoSuchNode",
        "api_prefix",
        "unknown_route",
        "history_unknown",
        "history_bad_max_items",
        "free_no_body",
    ],
)
def test_simple_request(comfy: Comfy, name: str) -> None:
    rec = load(name)
    check_response(rec["response"], comfy.replay(rec["request"]), what=name)


def test_system_stats_values(comfy: Comfy) -> None:
    body = comfy.get("/system_stats").json()
    assert (
        body["system"]["comfyui_version"]
        == load("system_stats")["response"]["body"]["system"]["comfyui_version"]
    )
    assert all(isinstance(a, str) for a in body["system"]["argv"])


def test_features(comfy: Comfy) -> None:
    rec = load("features")
    response = comfy.replay(rec["request"])
    check_response(rec["response"], response)
    assert response.json() == rec["response"]["body"]


def test_models_lists_checkpoints(comfy: Comfy) -> None:
    body = comfy.get("/models").json()
    assert "checkpoints" in body and set(body) <= set(load("models")["response"]["body"]) | set(body)


def test_object_info_covers_workflow_nodes(comfy: Comfy) -> None:
    rec = load("object_info")
    response = comfy.get("/object_info")
    assert response.status_code == 200
    body = response.json()
    classes = {node["class_type"] for prompt in WORKFLOWS.values() for node in prompt.values()}
    for cls in sorted(classes):
        assert cls in body, f"/object_info lacks {cls}"
        assert_shape(rec["response"]["body"][cls], body[cls], f"/object_info[{cls}]")


def test_object_info_unknown_node_is_empty(comfy: Comfy) -> None:
    response = comfy.get("/object_info/NoSuchNode")
    assert response.status_code == 200 and response.json() == {}


def test_api_prefix_serves_every_route(comfy: Comfy) -> None:
    unknown = str(uuid.uuid4())
    assert comfy.get(f"/api/history/{unknown}").json() == {}
    assert comfy.get("/api/object_info/NoSuchNode").json() == {}
    assert set(comfy.get("/api/queue").json()) == {"queue_running", "queue_pending"}
    assert comfy.get("/api/features").json() == load("features")["response"]["body"]
    body = comfy.submit(workflow("empty_save"))
    response = comfy.get(f"/api/history/{body['prompt_id']}")
    assert response.status_code == 200
    comfy.wait_history(body["prompt_id"])

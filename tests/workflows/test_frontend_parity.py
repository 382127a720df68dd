"""Conversion parity with the ComfyUI frontend 1.27.x, category by category.

Each category has fixtures from ``comfyui-workflow-templates`` 0.1.95 (the template package ComfyUI
0.3.64 pins) or built by hand; how the expected API files were derived: data/SOURCES.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_comfy.exceptions import ComfyUIWorkflowError
from airflow_comfy.workflows import apply_overrides, ui_to_api
from airflow_comfy.workflows.frontend import default_titles, js_key_order, js_value, node_title

DATA = Path(__file__).parent / "data"
PARITY_FIXTURES = [
    "3d_hunyuan3d-v2.1",  # SaveGLB.image (Comfy.SaveGLB)
    "api_tripo_text_to_model",  # Preview3D.image (Comfy.Preview3D)
    "api_openai_chat",  # PreviewAny.preview (Comfy.PreviewAny)
    "flux_kontext_dev_basic",  # LoadImageOutput: auto-refresh toggle, refresh button, upload
    "flux_fill_inpaint_example",  # a whole float default written as JSON.stringify does
    "image2image",  # ImageScaleToTotalPixels titled with the frontend's English label
    "subgraph_execution_order",  # subgraph inner nodes listed in root execution order
]


@pytest.mark.parametrize("name", PARITY_FIXTURES)
def test_same_json_text_as_the_frontend(name, object_info, ui):
    """Byte for byte: node order, input order, titles and number forms included."""
    expected = (DATA / "api" / f"{name}.json").read_text()
    actual = ui_to_api(ui(name), object_info)
    assert json.dumps(actual) == json.dumps(json.loads(expected))


def test_extension_widgets_are_sent(object_info, ui):
    assert ui_to_api(ui("3d_hunyuan3d-v2.1"), object_info)["10"]["inputs"]["image"] == ""
    for node in ui_to_api(ui("api_tripo_text_to_model"), object_info).values():
        if node["class_type"] == "Preview3D":
            assert node["inputs"]["image"] == ""
    assert ui_to_api(ui("api_openai_chat"), object_info)["2"]["inputs"]["preview"] == ""


def test_preview3d_image_is_empty_whatever_was_saved(object_info, ui):
    workflow = ui("3d_hunyuan3d-v2.1")
    save = next(node for node in workflow["nodes"] if node["type"] == "SaveGLB")
    save["widgets_values"] = ["mesh/run", "mesh/ComfyUI_00001_.glb"]  # set by onExecuted, never read back
    assert ui_to_api(workflow, object_info)["10"]["inputs"] == {
        "filename_prefix": "mesh/run",
        "image": "",
        "mesh": ["9", 0],
    }


def test_remote_combo_widgets_keep_the_saved_values_in_place(object_info, ui):
    workflow = ui("flux_kontext_dev_basic")
    node = next(node for node in workflow["nodes"] if node["id"] == 142)
    node["widgets_values"] = ["other.png [output]", True, "refresh", "image"]
    assert ui_to_api(workflow, object_info)["142"]["inputs"] == {
        "image": "other.png [output]",
        "refresh": "refresh",
    }
    node["widgets_values"] = []  # nothing saved: defaults of the combo and of the button
    inputs = ui_to_api(workflow, object_info)["142"]["inputs"]
    assert inputs == {"image": "Loading...", "refresh": "refresh"}


def test_widgets_without_a_saved_slot_do_not_shift_the_others(object_info):
    info = dict(object_info)
    info["SaveAudio"] = {
        "input": {
            "required": {"audio": ["AUDIO"], "filename_prefix": ["STRING", {"default": "audio/ComfyUI"}]}
        },
        "input_order": {"required": ["audio", "filename_prefix"]},
        "output": [],
        "display_name": "Save Audio (FLAC)",
    }
    workflow = {
        "nodes": [{"id": 1, "type": "SaveAudio", "mode": 0, "inputs": [], "widgets_values": ["audio/run"]}],
        "links": [],
    }
    assert ui_to_api(workflow, info)["1"]["inputs"] == {"filename_prefix": "audio/run", "audioUI": ""}


def test_numbers_are_written_as_json_stringify_does(object_info, ui):
    api = ui_to_api(ui("flux_fill_inpaint_example"), object_info)
    assert json.dumps(api["39"]["inputs"]["strength"]) == "1"  # default 1.0 of object_info
    assert js_value([1.0, 2.5, {"x": -0.0, "y": float("nan")}, True]) == [1, 2.5, {"x": 0, "y": None}, True]
    assert isinstance(js_value(1e21), float) and isinstance(js_value(1e20), int)


def test_titles_are_the_frontend_labels(object_info, ui):
    api = ui_to_api(ui("image2image"), object_info)
    assert api["18"]["_meta"]["title"] == "Scale Image to Total Pixels"
    assert "display_name" not in object_info["ImageBlur"] or not object_info["ImageBlur"]["display_name"]
    assert node_title("ImageBlur", object_info["ImageBlur"]) == "Image Blur"
    assert node_title("KSampler", object_info["KSampler"]) == "KSampler"
    assert node_title("SomeCustomNode", {"display_name": "Custom"}) == "Custom"
    assert node_title("SomeCustomNode", {}) == "SomeCustomNode"
    assert default_titles("ImageBlur") == {"ImageBlur", "Image Blur"}


@pytest.mark.parametrize("title", ["Image Blur", "ImageBlur"])
@pytest.mark.parametrize("selector", ["Image Blur.blur_radius", "ImageBlur.blur_radius"])
def test_overrides_accept_the_label_and_the_class_name(title, selector):
    workflow = {
        "1": {"class_type": "ImageBlur", "inputs": {"blur_radius": 1}, "_meta": {"title": title}},
        "2": {"class_type": "ImageBlur", "inputs": {"blur_radius": 1}, "_meta": {"title": "Mask blur"}},
    }
    assert apply_overrides(workflow, {selector: 5})["1"]["inputs"]["blur_radius"] == 5


def test_a_renamed_node_does_not_answer_to_default_titles():
    workflow = {
        "1": {"class_type": "ImageBlur", "inputs": {}, "_meta": {"title": "Soften"}},
        "2": {"class_type": "ImageBlur", "inputs": {}, "_meta": {"title": "Sharpen less"}},
    }
    with pytest.raises(ComfyUIWorkflowError, match="matches no node"):
        apply_overrides(workflow, {"Image Blur.blur_radius": 5})
    with pytest.raises(ComfyUIWorkflowError, match="ambiguous"):
        apply_overrides(workflow, {"ImageBlur.blur_radius": 5})  # the class type: two nodes


def test_node_order_is_the_frontend_prompt_order(object_info, ui):
    api = ui_to_api(ui("subgraph_execution_order"), object_info)
    # saved as [instance 20, instance 10, latent 5]; 5 feeds 10 first (its first output link), then 20
    assert list(api) == ["5", "10:2", "10:1", "10:3", "20:2", "20:1", "20:3"]
    assert js_key_order(["20", "3", "10:1", "007", "2:1", "100"]) == ["3", "20", "100", "10:1", "007", "2:1"]


@pytest.mark.parametrize("name", ["default", "reroute_bypass_mute", "01_get_started_text_to_image"])
def test_plain_ids_come_first_in_ascending_order(name, object_info, ui):
    keys = list(ui_to_api(ui(name), object_info))
    plain = [key for key in keys if key.isdigit()]
    assert keys[: len(plain)] == sorted(plain, key=int)

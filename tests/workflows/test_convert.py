"""UI-format to API-format conversion on workflows saved by the ComfyUI frontend.

Sources of the UI files and how the expected API files were established: data/SOURCES.md.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from contract_data import CONTRACT_DIR

from airflow_comfy.exceptions import ComfyUIWorkflowError
from airflow_comfy.protocol.validation import validate_prompt
from airflow_comfy.workflows import prepare_workflow, ui_to_api

DATA = Path(__file__).parent / "data"
FIXTURES = [
    "default",
    "primitive_node",
    "note_with_ksampler",
    "01_get_started_text_to_image",
    "reroute_bypass_mute",
    "group_ksampler_external_latent",  # legacy group nodes (more in test_group_nodes.py)
    "legacy_group_node",
]


@pytest.mark.parametrize("name", FIXTURES)
def test_matches_expected_api_field_by_field(name, object_info, ui):
    expected = json.loads((DATA / "api" / f"{name}.json").read_text())
    actual = ui_to_api(ui(name), object_info)
    assert sorted(actual) == sorted(expected)
    for node_id, node in expected.items():
        assert actual[node_id]["class_type"] == node["class_type"], node_id
        assert actual[node_id]["_meta"] == node["_meta"], node_id
        assert actual[node_id]["inputs"] == node["inputs"], node_id


def test_default_graph_values(object_info, ui):
    api = ui_to_api(ui("default"), object_info)
    # widgets_values [seed, <control_after_generate>, steps, cfg, sampler, scheduler, denoise]
    assert api["3"]["inputs"] == {
        "seed": 156680208700286,
        "steps": 20,
        "cfg": 8,
        "sampler_name": "euler",
        "scheduler": "normal",
        "denoise": 1,
        "model": ["4", 0],
        "positive": ["6", 0],
        "negative": ["7", 0],
        "latent_image": ["5", 0],
    }
    assert api["9"]["inputs"] == {"filename_prefix": "ComfyUI", "images": ["8", 0]}  # no value saved: default
    assert api["4"]["_meta"]["title"] == "Load Checkpoint"


def test_primitive_node_value_is_pushed_into_its_target(object_info, ui):
    workflow = ui("primitive_node")
    primitive = next(node for node in workflow["nodes"] if node["type"] == "PrimitiveNode")
    primitive["widgets_values"] = [33, "fixed"]
    api = ui_to_api(workflow, object_info)
    assert list(api) == ["2"]  # the PrimitiveNode itself is not emitted
    assert api["2"]["inputs"]["steps"] == 33
    assert api["2"]["inputs"]["seed"] == 0


def test_notes_are_dropped(object_info, ui):
    assert list(ui_to_api(ui("note_with_ksampler"), object_info)) == ["1"]


def test_reroutes_bypass_and_mute(object_info, ui):
    api = ui_to_api(ui("reroute_bypass_mute"), object_info)
    assert api["8"]["inputs"]["vae"] == ["4", 2]  # through Reroute 10
    assert api["7"]["inputs"]["clip"] == ["4", 1]  # through Reroutes 12 <- 11
    assert api["3"]["inputs"]["model"] == ["4", 0]  # through bypassed LoraLoader 13, MODEL slot
    assert api["6"]["inputs"]["clip"] == ["4", 1]  # through bypassed LoraLoader 13, CLIP slot
    assert "13" not in api and "14" not in api and "10" not in api
    assert api["15"] == {"inputs": {}, "class_type": "PreviewImage", "_meta": {"title": "Inverted preview"}}


def test_subgraph_is_expanded_with_frontend_ids(object_info, ui):
    api = ui_to_api(ui("01_get_started_text_to_image"), object_info)
    assert api["60"]["inputs"]["images"] == ["83:8", 0]
    assert api["83:3"]["inputs"]["model"] == ["83:28", 0]  # bypassed ModelSamplingAuraFlow inside
    assert "83:11" not in api and "84" not in api and "83" not in api
    assert api["83:3"]["inputs"]["seed"] == 528562900154240


def test_proxy_widget_values_of_a_subgraph_instance_win(object_info, ui):
    workflow = ui("01_get_started_text_to_image")
    instance = workflow["nodes"][0]
    instance["widgets_values"] = ["a red fox", 768, 512, 7, "fixed"]
    api = ui_to_api(workflow, object_info)
    assert api["83:27"]["inputs"]["text"] == "a red fox"
    assert (api["83:13"]["inputs"]["height"], api["83:13"]["inputs"]["width"]) == (768, 512)
    assert api["83:3"]["inputs"]["seed"] == 7


def test_muted_subgraph_instance_emits_nothing_inside(object_info, ui):
    workflow = ui("01_get_started_text_to_image")
    workflow["nodes"][0]["mode"] = 2
    api = ui_to_api(workflow, object_info)
    assert api == {
        "60": {
            "inputs": {"filename_prefix": "z-image-turbo"},
            "class_type": "SaveImage",
            "_meta": {"title": "Save Image"},
        }
    }


@pytest.mark.parametrize("name", ["default", "01_get_started_text_to_image", "primitive_node"])
def test_converted_workflows_pass_server_validation_except_model_files(name, object_info, ui):
    result = validate_prompt(ui_to_api(ui(name), object_info), object_info)
    problems = [
        (node_id, err["type"], err.get("extra_info", {}).get("input_name"))
        for node_id, entry in result.node_errors.items()
        for err in entry["errors"]
    ]
    model_inputs = {"ckpt_name", "clip_name", "vae_name", "unet_name"}
    assert all(kind == "value_not_in_list" and inp in model_inputs for _, kind, inp in problems), problems
    if name == "primitive_node":  # a lone KSampler: no output node, nothing else wrong
        assert result.error["type"] == "prompt_no_outputs" and not problems


def test_input_fed_by_a_muted_node_is_dropped_like_the_frontend_does(object_info, ui):
    # The frontend submits PreviewImage without 'images'; the server then rejects it, as here.
    result = validate_prompt(ui_to_api(ui("reroute_bypass_mute"), object_info), object_info)
    errors = result.node_errors["15"]["errors"]
    assert [(e["type"], e["extra_info"]["input_name"]) for e in errors] == [
        ("required_input_missing", "images")
    ]


def test_unknown_node_type_names_id_type_and_package(object_info, ui):
    workflow = ui("default")
    workflow["nodes"][0]["type"] = "FancySampler"
    workflow["nodes"][0]["properties"] = {"cnr_id": "comfyui-fancy", "ver": "1.2.0"}
    with pytest.raises(
        ComfyUIWorkflowError, match=r"node 7 \(FancySampler\); from package 'comfyui-fancy' version 1\.2\.0"
    ):
        ui_to_api(workflow, object_info)


def test_unknown_type_of_a_muted_node_is_not_an_error(object_info, ui):
    workflow = ui("default")
    workflow["nodes"].append({"id": 99, "type": "NotInstalled", "mode": 2, "properties": {"aux_id": "a/b"}})
    assert "99" not in ui_to_api(workflow, object_info)


def test_link_to_missing_node(object_info, ui):
    workflow = ui("default")
    workflow["links"] = [[1, 42, 0, 3, 0, "MODEL"] if link[0] == 1 else link for link in workflow["links"]]
    with pytest.raises(
        ComfyUIWorkflowError, match=r"node 3 \(KSampler\): input 'model' is linked \(link 1\) to node 42"
    ):
        ui_to_api(workflow, object_info)


def test_input_with_unknown_link_id(object_info, ui):
    workflow = ui("default")
    workflow["links"] = [link for link in workflow["links"] if link[0] != 9]
    with pytest.raises(ComfyUIWorkflowError, match=r"node 9 \(SaveImage\): input 'images' refers to link 9"):
        ui_to_api(workflow, object_info)


def test_cycle_is_detected(object_info, ui):
    workflow = ui("default")
    # KSampler 3 latent <- VAEEncode 20 <- VAEDecode 8 <- KSampler 3
    workflow["nodes"].append(
        {
            "id": 20,
            "type": "VAEEncode",
            "mode": 0,
            "inputs": [
                {"name": "pixels", "type": "IMAGE", "link": 30},
                {"name": "vae", "type": "VAE", "link": 31},
            ],
            "outputs": [{"name": "LATENT", "type": "LATENT", "links": [2]}],
        }
    )
    workflow["links"] = [link for link in workflow["links"] if link[0] != 2]
    workflow["links"] += [[2, 20, 0, 3, 3, "LATENT"], [30, 8, 0, 20, 0, "IMAGE"], [31, 4, 2, 20, 1, "VAE"]]
    with pytest.raises(ComfyUIWorkflowError, match=r"cycle: .*\(VAEEncode\)"):
        ui_to_api(workflow, object_info)


def test_reroute_loop_is_an_error_not_a_hang(object_info, ui):
    workflow = ui("default")
    workflow["nodes"] += [
        {"id": 50, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 51}]},
        {"id": 51, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 50}]},
    ]
    workflow["links"] = [link for link in workflow["links"] if link[0] != 9]
    workflow["links"] += [[9, 50, 0, 9, 0, "IMAGE"], [50, 50, 0, 51, 0, "*"], [51, 51, 0, 50, 0, "*"]]
    with pytest.raises(ComfyUIWorkflowError, match="circular link"):
        ui_to_api(workflow, object_info)


def test_group_nodes_are_reported_unsupported(object_info, ui):
    workflow = ui("default")
    workflow["nodes"].append({"id": 30, "type": "workflow>MyGroup", "mode": 0})
    with pytest.raises(ComfyUIWorkflowError, match=r"node 30 \(workflow>MyGroup\) is a legacy group node"):
        ui_to_api(workflow, object_info)


def test_prepare_workflow_needs_object_info_for_ui_saves(object_info):
    with pytest.raises(ComfyUIWorkflowError, match="needs the server's object_info"):
        prepare_workflow(DATA / "ui" / "default.json")
    api = prepare_workflow(
        DATA / "ui" / "default.json",
        object_info=CONTRACT_DIR / "object_info.json",
        overrides={"KSampler": {"seed": 5}, "9.filename_prefix": "run"},
    )
    assert api["3"]["inputs"]["seed"] == 5 and api["9"]["inputs"]["filename_prefix"] == "run"
    expected = json.loads((DATA / "api" / "default.json").read_text())
    assert prepare_workflow(copy.deepcopy(expected)) == expected  # API format passes through


def test_load_image_upload_widget_value_is_not_sent(object_info):
    workflow = {
        "nodes": [
            {
                "id": 1,
                "type": "LoadImage",
                "mode": 0,
                "widgets_values": ["example.png", "image"],
                "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
            },
            {
                "id": 2,
                "type": "PreviewImage",
                "mode": 0,
                "inputs": [{"name": "images", "type": "IMAGE", "link": 1}],
            },
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"]],
    }
    api = ui_to_api(workflow, object_info)
    assert api["1"]["inputs"] == {"image": "example.png"}
    assert api["2"]["inputs"] == {"images": ["1", 0]}

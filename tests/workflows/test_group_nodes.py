"""Legacy group nodes (``extra.groupNodes``) expanded like the frontend's GroupNodeHandler.

Sources of the UI files and how the expected API files were established: data/SOURCES.md. Tests
that change a graph in memory (widget values, links to and from the instance, modes, a PrimitiveNode
inside the group) say so.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from airflow_comfy.exceptions import ComfyUIWorkflowError
from airflow_comfy.protocol.validation import validate_prompt
from airflow_comfy.workflows import ui_to_api

DATA = Path(__file__).parent / "data"
FIXTURES = ["group_ksampler_external_latent", "legacy_group_node"]


def test_inner_nodes_get_instance_ids_links_and_external_input(object_info, ui):
    api = ui_to_api(ui("group_ksampler_external_latent"), object_info)
    assert sorted(api) == ["10:0", "10:1", "10:2", "10:3", "10:4", "10:5", "20"]
    sampler = api["10:3"]["inputs"]
    assert sampler["model"] == ["10:0", 0] and sampler["positive"] == ["10:1", 0]
    assert sampler["negative"] == ["10:2", 0]
    assert sampler["latent_image"] == ["20", 0]  # the instance's input, fed from outside
    assert api["10:4"]["inputs"] == {"samples": ["10:3", 0], "vae": ["10:0", 2]}


def test_instance_widget_values_win_over_the_definition(object_info, ui):
    workflow = ui("group_ksampler_external_latent")  # instance values changed in memory
    workflow["nodes"][0]["widgets_values"] = [
        "other.ckpt", "a red fox", "blurry", 7, "fixed", 33, 4.5, "euler", "normal", 0.5, "fox",
    ]  # fmt: skip
    api = ui_to_api(workflow, object_info)
    assert api["10:0"]["inputs"]["ckpt_name"] == "other.ckpt"
    assert api["10:1"]["inputs"]["text"] == "a red fox"  # "text"
    assert api["10:2"]["inputs"]["text"] == "blurry"  # "CLIPTextEncode text" (name taken)
    sampler = api["10:3"]["inputs"]
    assert (sampler["seed"], sampler["steps"], sampler["cfg"], sampler["denoise"]) == (7, 33, 4.5, 0.5)
    assert api["10:5"]["inputs"]["filename_prefix"] == "fox"


def test_legacy_separator_and_prefixed_duplicate_names(object_info, ui):
    api = ui_to_api(ui("legacy_group_node"), object_info)  # type "workflow/hello"
    # widgets: KSamplerAdvanced's 10 values (noise_seed has a control value), then KSampler's 7
    assert api["15:0"]["inputs"]["end_at_step"] == 10000
    assert api["15:0"]["inputs"]["return_with_leftover_noise"] == "disable"
    assert api["15:1"]["inputs"] == {
        "seed": 0,
        "steps": 20,
        "cfg": 8,
        "sampler_name": "euler",
        "scheduler": "normal",
        "denoise": 1,
    }


def _wire_legacy_group(workflow: dict, group_input: int = 7) -> dict:
    """In memory: EmptyLatentImage 20 -> group input 7 ('KSampler latent_image'); output 1 -> node 30."""
    instance = workflow["nodes"][0]
    instance["inputs"][group_input]["link"] = 1
    instance["outputs"][1]["links"] = [2]
    workflow["nodes"] += [
        {
            "id": 20,
            "type": "EmptyLatentImage",
            "mode": 0,
            "outputs": [{"name": "LATENT", "type": "LATENT", "links": [1]}],
            "widgets_values": [64, 64, 1],
        },
        {
            "id": 30,
            "type": "LatentUpscaleBy",
            "mode": 0,
            "inputs": [{"name": "samples", "type": "LATENT", "link": 2}],
            "widgets_values": ["nearest-exact", 2],
        },
    ]
    workflow["links"] = [[1, 20, 0, 15, group_input, "LATENT"], [2, 15, 1, 30, 0, "LATENT"]]
    return workflow


def test_links_into_and_out_of_the_instance(object_info, ui):
    api = ui_to_api(_wire_legacy_group(ui("legacy_group_node")), object_info)
    assert api["15:1"]["inputs"]["latent_image"] == ["20", 0]  # group input 7 -> KSampler slot 3
    assert "latent_image" not in api["15:0"]["inputs"]
    assert api["30"]["inputs"]["samples"] == ["15:1", 0]  # group output 1 = KSampler's LATENT


def test_bypassed_instance_passes_its_first_input_of_the_type_through(object_info, ui):
    # like any bypassed node: the first LATENT input is group input 3 ('latent_image')
    workflow = _wire_legacy_group(ui("legacy_group_node"), group_input=3)
    workflow["nodes"][0]["mode"] = 4
    api = ui_to_api(workflow, object_info)
    assert sorted(api) == ["20", "30"]
    assert api["30"]["inputs"]["samples"] == ["20", 0]
    unlinked = _wire_legacy_group(ui("legacy_group_node"))  # latent on input 7: input 3 is empty
    unlinked["nodes"][0]["mode"] = 4
    assert "samples" not in ui_to_api(unlinked, object_info)["30"]["inputs"]


def test_muted_instance_emits_nothing_inside(object_info, ui):
    workflow = _wire_legacy_group(ui("legacy_group_node"))
    workflow["nodes"][0]["mode"] = 2
    api = ui_to_api(workflow, object_info)
    assert sorted(api) == ["20", "30"]
    assert "samples" not in api["30"]["inputs"]  # fed by a muted node: dropped like the frontend does


def test_muted_and_bypassed_inner_nodes(object_info, ui):
    workflow = ui("group_ksampler_external_latent")
    inner = workflow["extra"]["groupNodes"]["ksampler_external_latent"]["nodes"]
    inner[2]["mode"] = 2  # negative prompt muted inside the definition
    inner[4]["mode"] = 4  # VAEDecode bypassed: no IMAGE input to pass on to SaveImage
    api = ui_to_api(workflow, object_info)
    assert "10:2" not in api and "10:4" not in api
    assert "negative" not in api["10:3"]["inputs"]
    assert "images" not in api["10:5"]["inputs"]


GROUP_SOCKETS = [
    ("model", "MODEL"),
    ("positive", "CONDITIONING"),
    ("negative", "CONDITIONING"),
    ("latent_image", "LATENT"),
]


def test_primitive_node_inside_the_group_sets_the_widget_it_feeds(object_info):
    sampler_inputs = [
        {"name": "model", "type": "MODEL", "link": None},
        {"name": "positive", "type": "CONDITIONING", "link": None},
        {"name": "negative", "type": "CONDITIONING", "link": None},
        {"name": "latent_image", "type": "LATENT", "link": None},
        {"name": "seed", "type": "INT", "link": None, "widget": {"name": "seed"}},
    ]
    definition = {
        "nodes": [
            {
                "id": -1,
                "type": "PrimitiveNode",
                "mode": 0,
                "outputs": [{"name": "INT", "type": "INT", "links": [], "widget": {"name": "seed"}}],
                "widgets_values": [5, "fixed"],
            },
            {"id": -1, "type": "KSampler", "mode": 0, "inputs": sampler_inputs, "widgets_values": []},
        ],
        "links": [[0, 0, 1, 4, 3, "INT"]],
        "external": [],
    }
    # group widgets: "value" (+ its control widget), steps, cfg, sampler_name, scheduler, denoise
    workflow = {
        "nodes": [
            {
                "id": 7,
                "type": "workflow>seeded",
                "mode": 0,
                "inputs": [{"name": n, "type": t, "link": None} for n, t in GROUP_SOCKETS],
                "widgets_values": [1234, "fixed", 30, 6.0, "dpmpp_2m", "karras", 0.75],
            }
        ],
        "links": [],
        "extra": {"groupNodes": {"seeded": definition}},
    }
    api = ui_to_api(workflow, object_info)
    assert list(api) == ["7:1"]  # the PrimitiveNode itself is not emitted
    assert api["7:1"]["inputs"] == {
        "seed": 1234,
        "steps": 30,
        "cfg": 6.0,
        "sampler_name": "dpmpp_2m",
        "scheduler": "karras",
        "denoise": 0.75,
    }


def test_converted_group_passes_server_validation_except_model_files(object_info, ui):
    result = validate_prompt(ui_to_api(ui("group_ksampler_external_latent"), object_info), object_info)
    problems = [
        (node_id, err["type"], err.get("extra_info", {}).get("input_name"))
        for node_id, entry in result.node_errors.items()
        for err in entry["errors"]
    ]
    assert problems == [("10:0", "value_not_in_list", "ckpt_name")]


def test_missing_definition_names_node_and_group(object_info, ui):
    workflow = ui("group_ksampler_external_latent")
    workflow["extra"]["groupNodes"] = {"something_else": {"nodes": [], "links": []}}
    with pytest.raises(
        ComfyUIWorkflowError,
        match=r"node 10 \(workflow>ksampler_external_latent\) is a legacy group node, but its definition "
        r"'ksampler_external_latent' is missing from the workflow's extra.groupNodes",
    ):
        ui_to_api(workflow, object_info)


def test_unknown_inner_node_type_is_reported_with_its_inner_id(object_info, ui):
    workflow = ui("group_ksampler_external_latent")
    workflow["extra"]["groupNodes"]["ksampler_external_latent"]["nodes"][4]["type"] = "FancyDecode"
    with pytest.raises(ComfyUIWorkflowError, match=r"node 10:4 \(FancyDecode\)"):
        ui_to_api(workflow, object_info)


def test_nested_group_node_is_reported_unsupported(object_info, ui):
    workflow = ui("group_ksampler_external_latent")
    workflow["extra"]["groupNodes"]["ksampler_external_latent"]["nodes"][5]["type"] = "workflow>inner"
    with pytest.raises(ComfyUIWorkflowError, match="nested group nodes are not supported"):
        ui_to_api(workflow, object_info)


def test_group_node_inside_a_subgraph_is_reported_unsupported(object_info, ui):
    workflow = ui("01_get_started_text_to_image")
    group = copy.deepcopy(ui("legacy_group_node"))
    workflow["definitions"]["subgraphs"][0]["nodes"].append({**group["nodes"][0], "id": 99})
    workflow.setdefault("extra", {})["groupNodes"] = group["extra"]["groupNodes"]
    with pytest.raises(ComfyUIWorkflowError, match=r"legacy group node inside a subgraph"):
        ui_to_api(workflow, object_info)

"""Per-run overrides by node id, dotted path, title and unique class type, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from contract_data import CONTRACT_DIR

from airflow_comfy.exceptions import ComfyUIWorkflowError
from airflow_comfy.workflows import apply_overrides, load_object_info

API = json.loads((Path(__file__).parent / "data" / "api" / "default.json").read_text())


@pytest.fixture
def workflow():
    wf = json.loads(json.dumps(API))
    wf["6"]["_meta"]["title"] = "Positive Prompt"
    wf["7"]["_meta"]["title"] = "Negative v1.5"
    return wf


def test_by_id_dotted_title_and_class(workflow):
    result = apply_overrides(
        workflow,
        {
            "3": {"steps": 4},
            "3.inputs.cfg": 2.5,
            "5.width": 768,
            "Positive Prompt": {"text": "a cat"},
            "Negative v1.5.text": "blurry",  # title with a dot: input name is after the last dot
            "KSampler": {"seed": 1},
            "Save Image.filename_prefix": "out/run",
        },
    )
    assert result["3"]["inputs"]["steps"] == 4 and result["3"]["inputs"]["cfg"] == 2.5
    assert result["3"]["inputs"]["seed"] == 1 and result["5"]["inputs"]["width"] == 768
    assert result["6"]["inputs"]["text"] == "a cat" and result["7"]["inputs"]["text"] == "blurry"
    assert result["9"]["inputs"]["filename_prefix"] == "out/run"
    assert workflow["3"]["inputs"]["steps"] == 20  # the input is not modified


def test_override_matching_nothing_lists_candidates(workflow):
    with pytest.raises(
        ComfyUIWorkflowError,
        match=r"'Sampler' matches no node.*3 \(KSampler\).*6 \(CLIPTextEncode, title 'Positive Prompt'\)",
    ):
        apply_overrides(workflow, {"Sampler": {"seed": 1}})
    with pytest.raises(ComfyUIWorkflowError, match="'42' matches no node"):
        apply_overrides(workflow, {"42.seed": 1})


def test_ambiguous_class_lists_the_matching_nodes(workflow):
    with pytest.raises(
        ComfyUIWorkflowError, match=r"'CLIPTextEncode' is ambiguous: it matches 2 nodes: 6 .*7 "
    ):
        apply_overrides(workflow, {"CLIPTextEncode": {"text": "x"}})


def test_ambiguous_title(workflow):
    workflow["7"]["_meta"]["title"] = "Positive Prompt"
    with pytest.raises(ComfyUIWorkflowError, match="'Positive Prompt' is ambiguous"):
        apply_overrides(workflow, {"Positive Prompt.text": "x"})


def test_unknown_input_rejected_only_with_object_info(workflow):
    info = load_object_info(CONTRACT_DIR / "object_info.json")
    assert apply_overrides(workflow, {"3.not_an_input": 1})["3"]["inputs"]["not_an_input"] == 1
    with pytest.raises(ComfyUIWorkflowError, match=r"no input 'not_an_input'; valid inputs: .*cfg.*seed"):
        apply_overrides(workflow, {"3.not_an_input": 1}, object_info=info)
    # an input the class declares but the saved node lacks is fine
    assert (
        apply_overrides(workflow, {"9.filename_prefix": "x"}, object_info=info)["9"]["inputs"][
            "filename_prefix"
        ]
        == "x"
    )


def test_key_without_input_name(workflow):
    with pytest.raises(ComfyUIWorkflowError, match="needs an input name"):
        apply_overrides(workflow, {"3": 42})


def test_nothing_changes_when_one_override_is_bad(workflow):
    with pytest.raises(ComfyUIWorkflowError):
        apply_overrides(workflow, {"3.seed": 9, "nope.seed": 1})
    assert workflow["3"]["inputs"]["seed"] == API["3"]["inputs"]["seed"]

"""Loading workflows and object_info from dicts, JSON text and files; format detection errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from contract_data import CONTRACT_DIR

from airflow_comfy.exceptions import ComfyUIWorkflowError
from airflow_comfy.protocol.validation import validate_prompt
from airflow_comfy.workflows import (
    detect_format,
    load_object_info,
    load_workflow,
    normalize_ids,
    prepare_workflow,
)

DATA = Path(__file__).parent / "data"


def test_detects_ui_and_api_formats():
    assert detect_format(load_workflow(DATA / "ui" / "default.json")) == "ui"
    assert detect_format(load_workflow(DATA / "api" / "default.json")) == "api"


def test_loads_from_dict_text_and_path_string_as_fresh_objects():
    original = json.loads((DATA / "api" / "default.json").read_text())
    from_dict = load_workflow(original)
    from_dict["3"]["inputs"]["seed"] = -1
    assert original["3"]["inputs"]["seed"] == 156680208700286
    assert load_workflow(json.dumps(original)) == original
    assert load_workflow(str(DATA / "api" / "default.json")) == original


def test_not_json_names_the_file_and_position(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"3": {"class_type": "KSampler",\n  "inputs": {,}}}')
    with pytest.raises(ComfyUIWorkflowError, match=r"broken\.json is not valid JSON: .* line 2, column 14"):
        load_workflow(bad)
    with pytest.raises(ComfyUIWorkflowError, match=r"JSON text\) is not valid JSON"):
        load_workflow("{nope")


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ComfyUIWorkflowError, match="does not exist"):
        load_workflow(tmp_path / "absent.json")


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({}, "empty"),
        ({"nodes": [], "links": []}, "empty"),
        ({"foo": 1, "bar": {"x": 1}}, "not a ComfyUI workflow: .*bar, foo"),
        ([1, 2], "must be a JSON object"),
        ({"prompt": {"1": {"class_type": "X"}}}, "POST /prompt request body"),
    ],
)
def test_neither_format_is_a_clear_error(obj, message):
    with pytest.raises(ComfyUIWorkflowError, match=message):
        load_workflow(json.dumps(obj))


def test_object_info_from_transcript_body_and_gzip(tmp_path):
    info = load_object_info(CONTRACT_DIR / "object_info.json")
    assert "KSampler" in info and len(info) > 400
    packed = tmp_path / "object_info.json.gz"
    packed.write_bytes(gzip.compress(json.dumps(info).encode()))
    assert load_object_info(packed) == info
    with pytest.raises(ComfyUIWorkflowError, match="without an 'input' section"):
        load_object_info({"KSampler": {"output": []}})


def test_a_structurally_broken_save_is_a_workflow_error():
    import gzip
    import json as _json
    from pathlib import Path as _Path

    from airflow_comfy.exceptions import ComfyUIWorkflowError
    from airflow_comfy.workflows import ui_to_api

    with gzip.open(_Path(__file__).parents[2] / "airflow_comfy/testing/data/object_info.json.gz") as handle:
        info = _json.loads(handle.read())
    broken = {"nodes": [{"id": 1, "type": "EmptyImage", "inputs": 5, "widgets_values": [64, 64, 1, 0]}]}
    with pytest.raises(ComfyUIWorkflowError, match="malformed and cannot be converted"):
        ui_to_api({**broken, "links": []}, info)


def test_native_rendering_ints_become_string_ids_and_links():
    """render_template_as_native_obj=True turns ["13", 0] into [13, 0]; ComfyUI needs strings."""
    native = {
        13: {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "99": {
            "class_type": "SaveImage",
            "inputs": {"images": [13, 0], "filename_prefix": "x", "flag": [True, 0]},
        },
    }
    api = prepare_workflow(native)
    assert list(api) == ["13", "99"]
    assert api["99"]["inputs"] == {"images": ["13", 0], "filename_prefix": "x", "flag": [True, 0]}
    assert native["99"]["inputs"]["images"] == [13, 0]  # the caller's dict is left alone
    assert normalize_ids(api) == api


def test_native_rendering_passes_validation(object_info):
    native = json.loads((DATA / "api" / "default.json").read_text())
    for node in native.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                node["inputs"][name] = [int(value[0]), value[1]]
    result = validate_prompt(prepare_workflow(native, object_info=object_info), object_info)
    assert not [e for entry in result.node_errors.values() for e in entry["errors"] if "ckpt" not in str(e)]


def test_prepare_workflow_reads_object_info_and_the_workflow_without_changing_them(object_info, ui):
    """object_info is shared, never copied or modified; the result shares nothing with the inputs."""
    workflow = ui("flux_kontext_dev_basic")
    info_before = json.dumps(object_info, sort_keys=True)
    workflow_before = json.dumps(workflow, sort_keys=True)
    api = prepare_workflow(workflow, object_info=object_info, overrides={"142.image": "x.png [output]"})
    api["142"]["inputs"]["image"] = "changed"
    for node in api.values():
        for value in node["inputs"].values():
            if isinstance(value, list):
                value.append("changed")
    assert json.dumps(object_info, sort_keys=True) == info_before
    assert json.dumps(workflow, sort_keys=True) == workflow_before
    assert load_object_info(object_info) is not object_info  # a shallow top level, the entries shared
    assert load_object_info(object_info)["KSampler"] is object_info["KSampler"]

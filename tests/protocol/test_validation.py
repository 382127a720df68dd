"""The pure validation mirror against the recorded object_info and the recorded 400 answers."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest
from contract_data import without_tracebacks

from airflow_comfy.protocol.validation import (
    CustomValidator,
    types_compatible,
    validate_prompt,
)

_spec = importlib.util.spec_from_file_location(
    "_tests_root_conftest", Path(__file__).parents[1] / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_root = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root)
load_transcript = _root.load_transcript  # the shared transcript loader of tests/conftest.py

OBJECT_INFO = load_transcript("object_info")["response"]["body"]
REJECTED = [
    "prompt_err_bad_combo",
    "prompt_err_empty_prompt",
    "prompt_err_invalid_input_type",
    "prompt_err_link_bad_shape",
    "prompt_err_link_bad_slot",
    "prompt_err_link_nonexistent_node",
    "prompt_err_missing_class_type",
    "prompt_err_missing_input",
    "prompt_err_no_output_node",
    "prompt_err_type_mismatch",
    "prompt_err_unknown_class_type",
    "prompt_err_value_too_big",
    "prompt_err_value_too_small",
]


@pytest.mark.parametrize("name", REJECTED)
def test_same_400_body_as_the_real_server(name: str) -> None:
    record = load_transcript(name)
    result = validate_prompt(record["request"]["json"]["prompt"], OBJECT_INFO)
    assert not result.ok
    # JSON round trip: the server's tuples are lists on the wire.
    got = json.loads(json.dumps(result.body()))
    assert without_tracebacks(got) == without_tracebacks(record["response"]["body"])


def test_exception_during_validation_carries_a_traceback() -> None:
    record = load_transcript("prompt_err_link_nonexistent_node")
    result = validate_prompt(record["request"]["json"]["prompt"], OBJECT_INFO)
    extra = result.node_errors["2"]["errors"][0]["extra_info"]
    assert extra["exception_type"] == "KeyError"
    assert extra["traceback"] and all(isinstance(line, str) for line in extra["traceback"])


def test_partial_node_errors_keep_the_good_output() -> None:
    record = load_transcript("prompt_ok_partial_node_errors")["steps"][0]
    result = validate_prompt(record["request"]["json"]["prompt"], OBJECT_INFO)
    assert result.ok and result.error is None
    assert result.good_outputs == ["2"]
    expected = record["response"]["body"]["node_errors"]
    got = json.loads(json.dumps({"node_errors": result.node_errors}))
    assert without_tracebacks(got) == without_tracebacks({"node_errors": expected})


def test_custom_validator_reports_like_loadimage() -> None:
    record = load_transcript("prompt_err_loadimage_missing_file")
    prompt = record["request"]["json"]["prompt"]
    missing = CustomValidator(("image",), lambda values: f"Invalid image file: {values['image']}")
    result = validate_prompt(prompt, OBJECT_INFO, custom_validators={"LoadImage": missing})
    assert result.body() == record["response"]["body"]
    # Without a validator the file cannot be checked locally: no false alarm from the empty list.
    assert validate_prompt(prompt, OBJECT_INFO).ok
    present = CustomValidator(("image",), lambda values: True)
    assert validate_prompt(prompt, OBJECT_INFO, custom_validators={"LoadImage": present}).ok


def test_upstream_error_is_reported_once_with_all_dependent_outputs() -> None:
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "a"}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    result = validate_prompt(prompt, OBJECT_INFO)
    assert not result.ok
    assert list(result.node_errors) == ["1"]
    assert result.node_errors["1"]["dependent_outputs"] == ["2", "3"]
    assert result.error["details"] == ""


def test_values_are_coerced_in_a_copy_only() -> None:
    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": "64", "height": 8.0, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": 5}},
    }
    original = copy.deepcopy(prompt)
    result = validate_prompt(prompt, OBJECT_INFO)
    assert result.ok
    assert prompt == original
    assert result.prompt["1"]["inputs"]["width"] == 64
    assert result.prompt["2"]["inputs"]["filename_prefix"] == "5"


def test_v3_combo_values_checked_unless_mirroring_0_3_64() -> None:
    prompt = {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "2": {
            "class_type": "LatentCut",
            "inputs": {"samples": ["1", 0], "dim": "z", "index": 0, "amount": 1},
        },
        "3": {"class_type": "SaveLatent", "inputs": {"samples": ["2", 0], "filename_prefix": "x"}},
    }
    strict = validate_prompt(prompt, OBJECT_INFO)
    assert not strict.ok
    (err,) = strict.node_errors["2"]["errors"]
    assert err["type"] == "value_not_in_list"
    assert err["details"] == "dim: 'z' not in ['x', 'y', 't']"
    assert validate_prompt(prompt, OBJECT_INFO, check_v3_combos=False).ok


def test_long_combo_lists_are_summarised() -> None:
    info = copy.deepcopy(OBJECT_INFO)
    info["ImageScale"]["input"]["required"]["upscale_method"] = [[f"m{i}" for i in range(25)]]
    prompt = load_transcript("prompt_err_bad_combo")["request"]["json"]["prompt"]
    err = validate_prompt(prompt, info).node_errors["2"]["errors"][0]
    assert err["details"] == "upscale_method: 'foo' not in (list of length 25)"
    assert err["extra_info"]["input_config"] is None


def test_partial_execution_targets_limit_outputs() -> None:
    prompt = load_transcript("prompt_ok_partial_node_errors")["steps"][0]["request"]["json"]["prompt"]
    result = validate_prompt(prompt, OBJECT_INFO, partial_execution_targets=["2"])
    assert result.ok and result.node_errors == {}
    result = validate_prompt(prompt, OBJECT_INFO, partial_execution_targets=["3"])
    assert not result.ok and result.error["type"] == "prompt_outputs_failed_validation"


@pytest.mark.parametrize("bad", ["abc", ["x"], 5])
def test_prompt_that_is_not_an_object_raises(bad: object) -> None:
    with pytest.raises((TypeError, AttributeError)):
        validate_prompt(bad, OBJECT_INFO)


@pytest.mark.parametrize(
    ("received", "wanted", "ok"),
    [("IMAGE", "IMAGE", True), ("INT", "IMAGE", False), ("INT", "*", True), ("INT,FLOAT", "FLOAT", True)],
)
def test_types_compatible(received: str, wanted: str, ok: bool) -> None:
    assert types_compatible(received, wanted) is ok

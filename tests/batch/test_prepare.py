"""Who a rejection of an item's workflow blames: the item (an input it changed) or the server."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_comfy.batch.prepare import blames_item
from airflow_comfy.protocol.errors import validation_error

BASE = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "color": 0}},
    "3": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 2}},
}


def _rejection(node: str, input_name: str | None) -> Any:
    extra = {"input_name": input_name} if input_name else {}
    errors = [{"type": "value_bigger_than_max", "message": "m", "details": "d", "extra_info": extra}]
    return validation_error({"error": {"type": "prompt_outputs_failed_validation", "message": "x"},
                             "node_errors": {node: {"errors": errors, "class_type": "C"}}})  # fmt: skip


@pytest.mark.parametrize(
    ("node", "input_name", "blamed"),
    [
        ("3", "blur_radius", True),  # the input the item changed
        ("3", None, True),  # the node it changed, no input named
        ("1", "width", False),  # an input the item left alone: the server's problem
        ("1", None, False),
    ],
)
def test_blames_item(node: str, input_name: str | None, blamed: bool) -> None:
    item_workflow = {**BASE, "3": {**BASE["3"], "inputs": {**BASE["3"]["inputs"], "blur_radius": 999}}}
    assert blames_item(BASE, item_workflow, _rejection(node, input_name)) is blamed

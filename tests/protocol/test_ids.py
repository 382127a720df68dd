"""Prompt and client ids."""

from __future__ import annotations

import subprocess
import sys
import uuid

from airflow_comfy.protocol.ids import (
    NAMESPACE,
    canonical_json,
    deterministic_prompt_id,
    is_canonical_uuid,
    new_client_id,
)


def test_deterministic_prompt_id_is_stable_and_canonical():
    workflow = {"2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}, "1": {"class_type": "E"}}
    a = deterministic_prompt_id("dag", "run", "task", -1, workflow)
    b = deterministic_prompt_id("dag", "run", "task", -1, dict(reversed(list(workflow.items()))))
    assert a == b and is_canonical_uuid(a)
    assert uuid.UUID(a).version == 5
    assert a == str(uuid.uuid5(NAMESPACE, canonical_json(["dag", "run", "task", -1, workflow])))


def test_deterministic_prompt_id_differs_for_different_inputs():
    ids = {
        deterministic_prompt_id("dag", "run", "task", 0),
        deterministic_prompt_id("dag", "run", "task", 1),
        deterministic_prompt_id("dag", "run2", "task", 0),
        deterministic_prompt_id("dag", "run", "task", 0, {"x": 1}),
        deterministic_prompt_id("dag", "run", "task", "0"),
    }
    assert len(ids) == 5


def test_deterministic_prompt_id_same_in_another_interpreter():
    # Not affected by hash randomisation or the process: a retried task finds its earlier prompt.
    here = deterministic_prompt_id("d", "r", "t", {"é": [1, 2.5, None]})
    code = (
        "from airflow_comfy.protocol.ids import deterministic_prompt_id as f;"
        "print(f('d', 'r', 't', {'é': [1, 2.5, None]}))"
    )
    there = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    ).stdout.strip()
    assert here == there


def test_canonical_json():
    assert canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'
    assert canonical_json({"p": object}).startswith('{"p":"<class')


def test_is_canonical_uuid():
    value = str(uuid.uuid4())
    assert is_canonical_uuid(value)
    assert not is_canonical_uuid(value.upper())
    assert not is_canonical_uuid(value.replace("-", ""))
    assert not is_canonical_uuid("{" + value + "}")
    assert not is_canonical_uuid(value + "\n")
    assert not is_canonical_uuid("")
    assert not is_canonical_uuid(None)


def test_new_client_id():
    a, b = new_client_id(), new_client_id()
    assert a != b and len(a) == 32 and int(a, 16) >= 0

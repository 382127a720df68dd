"""The README's "A first DAG" is the file shipped in the package, and runs as printed on the stand-in.

The real-server example beside it (``txt2img``) is checked as far as a machine without the model
can: its overrides resolve and the stand-in's node definitions (recorded from ComfyUI 0.3.64) find
nothing wrong with it except the checkpoint that is not installed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from airflow_comfy.examples import DAGS_FOLDER, FIRST_DAG_ID, workflow_names, workflow_path

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```python\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_the_readme_first_dag_is_the_shipped_file():
    blocks = FENCE.findall(_readme_section("A first DAG"))
    assert blocks[0] == (DAGS_FOLDER / "first_dag.py").read_text(encoding="utf-8")
    assert f"def {FIRST_DAG_ID}()" in blocks[0]
    assert "{{ ds" not in "".join(blocks) and "{{ run_id }}" in blocks[0]


def test_example_workflows_are_listed_and_unknown_names_explained():
    assert {"scale_blur_save", "txt2img"} <= set(workflow_names())
    assert Path(workflow_path("txt2img")).is_file()
    with pytest.raises(ValueError, match=r"no example workflow 'nope'; the examples are: .*scale_blur_save"):
        workflow_path("nope")


@pytest.mark.timeout(240)
def test_the_first_dag_runs_as_printed_on_the_stand_in(
    standin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from airflow_comfy.testing.dags import run_dag

    monkeypatch.chdir(tmp_path)  # output_dir="comfyui-outputs/{{ run_id }}" is relative to the worker
    result = run_dag(FIRST_DAG_ID, DAGS_FOLDER, comfyui_url=standin.url)
    result.raise_for_state()
    [path] = result.return_value("publish")
    assert Path(path).is_file() and Path(path).is_relative_to(tmp_path / "comfyui-outputs" / result.run_id)
    assert result.return_value("generate") == [path]


def test_the_txt2img_example_is_valid_but_for_the_missing_model():
    from airflow_comfy.protocol.validation import validate_prompt
    from airflow_comfy.testing.catalog import recorded_object_info
    from airflow_comfy.workflows import prepare_workflow

    info = recorded_object_info()
    overrides = {"KSampler.seed": 42, "Positive Prompt.text": "a lighthouse at dawn"}
    api = prepare_workflow(workflow_path("txt2img"), object_info=info, overrides=overrides)
    assert api["3"]["inputs"]["seed"] == 42 and api["6"]["inputs"]["text"] == "a lighthouse at dawn"
    result = validate_prompt(api, info)
    problems = [
        (node_id, err["extra_info"].get("input_name"))
        for node_id, entry in result.node_errors.items()
        for err in entry["errors"]
    ]
    assert problems == [("4", "ckpt_name")]

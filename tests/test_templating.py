"""Template errors fail at once (no retries), and no example or doc uses a logical-date-only template."""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
import pytest
from airflow.sdk import DAG, BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_comfy.operators.comfyui import ComfyUIPromptOperator
from airflow_comfy.sensors.comfyui import ComfyUIPromptSensor
from airflow_comfy.templating import FailFastTemplates

ROOT = Path(__file__).resolve().parents[1]
# Jinja names that only exist when a run has a logical date; Airflow 3 manual runs have none.
LOGICAL_DATE_ONLY = re.compile(r"\{\{[^}]*\b(ds|ds_nodash|ts|ts_nodash|ts_nodash_with_tz|logical_date)\b")
CONTEXT = {"run_id": "manual__2026-01-01T00:00:00+00:00", "params": {}}


def _render(task: BaseOperator) -> None:
    """Render as the task runner does: with the DAG's environment (StrictUndefined)."""
    task.render_template_fields(dict(CONTEXT), task.dag.get_template_env())


@pytest.fixture(autouse=True)
def _in_a_dag():
    with DAG("templating", schedule=None):
        yield


def test_undefined_name_fails_without_retries_and_says_why():
    task = ComfyUIPromptOperator(
        task_id="generate", workflow={"1": {}}, output_dir="/renders/{{ ts_nodash }}", retries=2
    )
    with pytest.raises(AirflowFailException, match="'ts_nodash' is undefined") as info:
        _render(task)
    assert "run_id" in str(info.value) and "logical date" in str(info.value)
    assert isinstance(info.value.__cause__, jinja2.UndefinedError)


def test_plain_base_operator_would_retry():
    # The behaviour the mixin changes: without it the error is a retryable UndefinedError.
    class Plain(BaseOperator):
        template_fields = ("path",)

        def __init__(self, path: str, **kwargs):
            super().__init__(**kwargs)
            self.path = path

    class FailFast(FailFastTemplates, Plain):
        pass

    with pytest.raises(jinja2.UndefinedError):
        _render(Plain(task_id="plain", path="{{ nope }}"))
    with pytest.raises(AirflowFailException, match="'nope' is undefined") as info:
        _render(FailFast(task_id="fast", path="{{ nope }}"))
    assert "logical date" not in str(info.value)  # the hint only for logical-date names


def test_nested_fields_and_syntax_errors_fail_fast_too():
    task = ComfyUIPromptOperator(
        task_id="generate", workflow={"1": {}}, overrides={"Canvas.color": "{{ params.missing.deep }}"}
    )
    with pytest.raises(AirflowFailException, match="has no attribute 'missing'"):
        _render(task)
    sensor = ComfyUIPromptSensor(task_id="wait", prompt_id="{{ run_id ")
    with pytest.raises(AirflowFailException, match="Template error"):
        _render(sensor)


def test_defined_templates_still_render():
    task = ComfyUIPromptOperator(task_id="generate", workflow={"1": {}}, output_dir="/renders/{{ run_id }}")
    _render(task)
    assert task.output_dir == "/renders/manual__2026-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    "path",
    sorted([*ROOT.glob("dags_examples/*.py"), ROOT / "README.md", *ROOT.glob("docs/pages/**/*.md")]),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_examples_and_docs_use_templates_every_run_has(path: Path):
    assert not LOGICAL_DATE_ONLY.findall(path.read_text(encoding="utf-8"))

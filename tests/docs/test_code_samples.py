"""Every ```python block of the docs (docs/pages/**/*.md) and of README.md is executed.

The blocks of one page run in order in one namespace, as a reader would paste them, with:

- the current directory a fresh project folder holding ``workflows/txt2img.json`` (a Stable Diffusion
  workflow in API format: it validates against the stand-in's node definitions except for its model,
  which is not installed), ``workflows/invert_blur.json`` (weight-free, runs on the stand-in),
  ``workflows/invert_blur_ui.json`` (a web-UI save) and ``dags/my_renders.py``;
- a running stand-in ComfyUI on 127.0.0.1 and ``AIRFLOW_CONN_COMFYUI_DEFAULT`` pointing at it;
- ``__file__`` set to a DAG file in that folder and ``tmp_path`` to an empty folder.

DAG-definition samples only have to define their DAG. A block that defines ``test_*`` functions
(pytest-style samples) has each of them called with fresh ``tmp_path`` / ``monkeypatch`` arguments.
A block whose info string contains ``no-run`` is skipped; keep that rare (there is none today).
"""

from __future__ import annotations

import inspect
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_comfy.examples import workflow_path

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "docs" / "pages"
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)

# The Stable Diffusion 1.5 workflow shipped with the package (the README's real-server example).
TXT2IMG = json.loads(Path(workflow_path("txt2img")).read_text())

INVERT_BLUR = {
    "1": {
        "class_type": "EmptyImage",
        "_meta": {"title": "Canvas"},
        "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 3368601},
    },
    "2": {"class_type": "ImageInvert", "_meta": {"title": "Invert"}, "inputs": {"image": ["1", 0]}},
    "3": {
        "class_type": "ImageBlur",
        "_meta": {"title": "Blur"},
        "inputs": {"image": ["2", 0], "blur_radius": 1, "sigma": 1.0},
    },
    "4": {
        "class_type": "SaveImage",
        "_meta": {"title": "Save"},
        "inputs": {"images": ["3", 0], "filename_prefix": "docs/invert_blur"},
    },
}

MY_RENDERS_DAG = """
from pathlib import Path

import pendulum
from airflow.sdk import dag

from airflow_comfy.operators.comfyui import ComfyUIPromptOperator


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False)
def my_renders():
    ComfyUIPromptOperator(
        task_id="render",
        workflow=str(Path(__file__).parent / "workflows" / "invert_blur.json"),
        overrides={"Blur.blur_radius": 2},
        wait_mode="polling",
        check_interval=0.2,
        timeout=60,
    )


my_renders()
"""


def _blocks(path: Path) -> list[tuple[int, str, str]]:
    """(line number, info string, code) of every python block of ``path``."""
    text = path.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, match.start()) + 1, match.group(1).strip(), match.group(2))
        for match in FENCE.finditer(text)
    ]


def _sample_files() -> list[Path]:
    files = [*sorted(PAGES.rglob("*.md")), ROOT / "README.md"]
    return [path for path in files if _blocks(path)]


def test_the_samples_are_found():
    """Guards the extraction itself: a broken pattern must not silently turn every test into a no-op."""
    files = _sample_files()
    blocks = [block for path in files for block in _blocks(path)]
    assert len(files) >= 8, files
    assert len(blocks) >= 15, len(blocks)
    assert all(code.strip() for _line, _info, code in blocks)
    run = [block for block in blocks if "no-run" not in block[1]]
    assert len(run) >= len(blocks) - 2, "no-run samples must stay rare"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A user's project folder with workflows and a DAG, a stand-in ComfyUI and the connection."""
    from airflow_comfy.testing import StandInServer

    folder = tmp_path / "project"
    workflows = folder / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "txt2img.json").write_text(json.dumps(TXT2IMG, indent=1))
    (workflows / "invert_blur.json").write_text(json.dumps(INVERT_BLUR, indent=1))
    shutil.copy(ROOT / "dags_examples" / "workflows" / "invert_blur_ui.json", workflows)
    dags = folder / "dags"
    shutil.copytree(workflows, dags / "workflows")
    (dags / "my_renders.py").write_text(MY_RENDERS_DAG)
    (folder / "tmp").mkdir()
    with StandInServer(base_dir=tmp_path / "comfyui") as server:
        monkeypatch.chdir(folder)
        monkeypatch.setenv(
            "AIRFLOW_CONN_COMFYUI_DEFAULT", json.dumps({"conn_type": "comfyui", "host": server.url})
        )
        yield folder


def _call_test_function(func, where: str, tmp_root: Path) -> None:
    params = inspect.signature(func).parameters
    with pytest.MonkeyPatch.context() as monkeypatch:
        tmp = Path(tmp_root) / func.__name__
        tmp.mkdir(parents=True)
        known = {"tmp_path": tmp, "monkeypatch": monkeypatch}
        unknown = [name for name in params if name not in known]
        assert not unknown, f"{where}: {func.__name__} asks for fixtures the sample runner lacks: {unknown}"
        func(**{name: known[name] for name in params})


@pytest.mark.timeout(120)
@pytest.mark.parametrize("page", _sample_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_code_samples_run(page: Path, project: Path, tmp_path: Path):
    namespace: dict[str, object] = {
        "__name__": "docs_sample",
        "__file__": str(project / "sample_dag.py"),
        "tmp_path": project / "tmp",
    }
    ran = 0
    for line, info, code in _blocks(page):
        if "no-run" in info.split():
            continue
        where = f"{page.relative_to(ROOT)}:{line}"
        before = set(namespace)
        try:
            exec(compile(code, where, "exec"), namespace)
            for name in sorted(set(namespace) - before):
                if name.startswith("test_") and callable(namespace[name]):
                    _call_test_function(namespace[name], where, tmp_path / "samples")
                    ran += 1
        except Exception as exc:
            pytest.fail(f"the python sample at {where} failed: {type(exc).__name__}: {exc}")
        ran += 1
    assert ran > 0

"""Example workflows and the README's first DAG, shipped inside the package so they work from a wheel.

    from airflow_comfy.examples import workflow_path
    workflow_path("scale_blur_save")  # the absolute path of a workflow file inside the installed package

Workflows (API format, with node titles so overrides read like the web UI):

- ``scale_blur_save``: EmptyImage "Canvas" → ImageScale "Resize" → ImageBlur "Blur" → SaveImage
  "Save". No model, no GPU: it runs on the stand-in server (:mod:`airflow_comfy.testing`) and on
  any ComfyUI.
- ``txt2img``: the classic Stable Diffusion 1.5 text-to-image graph (KSampler, "Positive Prompt",
  "Negative Prompt", "Save"); needs a real ComfyUI with ``v1-5-pruned-emaonly.safetensors``.

:data:`DAGS_FOLDER` holds ``first_dag.py``, the README's "A first DAG" verbatim (a test keeps the
two identical); ``python -m airflow_comfy.testing.demo`` runs it by default.

Invariant: these are data files; importing this module reads and writes nothing, and imports
neither Airflow nor the stand-in's dependencies.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DAGS_FOLDER", "FIRST_DAG_ID", "WORKFLOWS_FOLDER", "workflow_names", "workflow_path"]

WORKFLOWS_FOLDER = Path(__file__).resolve().parent / "workflows"
DAGS_FOLDER = Path(__file__).resolve().parent / "dags"
#: The id of the DAG in ``DAGS_FOLDER / "first_dag.py"``.
FIRST_DAG_ID = "comfyui_first_dag"


def workflow_names() -> list[str]:
    """The names :func:`workflow_path` accepts."""
    return sorted(path.stem for path in WORKFLOWS_FOLDER.glob("*.json"))


def workflow_path(name: str) -> str:
    """The absolute path of the shipped workflow ``name`` (e.g. ``"scale_blur_save"``)."""
    path = WORKFLOWS_FOLDER / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"no example workflow {name!r}; the examples are: {', '.join(workflow_names())}")
    return str(path)

"""airflow-comfy: an Apache Airflow provider for ComfyUI.

The public API is re-exported here lazily, so ``import airflow_comfy`` stays cheap for DAG parsing:
``ComfyUIHook``, the operators and sensor, the extra links, the TaskFlow helpers ``run_workflow`` and
``run_batch``, ``read_manifest`` (a batch's results) and the exceptions.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ComfyUIHook": "airflow_comfy.hooks.comfyui",
    "ComfyUIPromptOperator": "airflow_comfy.operators.comfyui",
    "ComfyUICancelPromptOperator": "airflow_comfy.operators.comfyui",
    "ComfyUIFreeOperator": "airflow_comfy.operators.comfyui",
    "ComfyUIUploadOperator": "airflow_comfy.operators.comfyui",
    "ComfyUIPromptSensor": "airflow_comfy.sensors.comfyui",
    "ComfyUIPromptTrigger": "airflow_comfy.triggers.comfyui",
    "ComfyUIBatchOperator": "airflow_comfy.operators.batch",
    "ComfyUIBatchTrigger": "airflow_comfy.triggers.batch",
    "read_manifest": "airflow_comfy.batch.manifest",
    "run_batch": "airflow_comfy.taskflow",
    "ComfyUIWebLink": "airflow_comfy.links",
    "ComfyUIOutputLink": "airflow_comfy.links",
    "run_workflow": "airflow_comfy.taskflow",
}
_EXCEPTIONS = "airflow_comfy.exceptions"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None and name.startswith("ComfyUI") and name.endswith("Error"):
        module = _EXCEPTIONS
    if module is None:
        raise AttributeError(f"module 'airflow_comfy' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = ["__version__", *_EXPORTS]

"""The stand-in's /object_info: the recorded ComfyUI 0.3.64 catalogue plus the stand-in-only nodes.

The recorded body (478 classes) ships gzip-compressed as package data. LoadImage's file list is
filled from the server's ``input/`` folder on every call, like the real server does.

Invariant: the recorded data is loaded once per process and never mutated; every caller gets a
fresh top-level dict with its own LoadImage entry.
"""

from __future__ import annotations

import copy
import functools
import gzip
import json
from importlib import resources
from typing import Any

from airflow_comfy.testing.files import Folders
from airflow_comfy.testing.nodes import STAND_IN_OBJECT_INFO


@functools.cache
def recorded_object_info() -> dict[str, Any]:
    """The recorded GET /object_info body of ComfyUI 0.3.64 (do not mutate)."""
    data = resources.files("airflow_comfy.testing").joinpath("data/object_info.json.gz").read_bytes()
    info: dict[str, Any] = json.loads(gzip.decompress(data))
    info.update(copy.deepcopy(STAND_IN_OBJECT_INFO))
    return info


def object_info(folders: Folders) -> dict[str, Any]:
    """The catalogue as this server shows it now (LoadImage lists the files in ``input/``)."""
    info = dict(recorded_object_info())
    load_image = copy.deepcopy(info["LoadImage"])
    load_image["input"]["required"]["image"] = [folders.input_images(), {"image_upload": True}]
    info["LoadImage"] = load_image
    return info

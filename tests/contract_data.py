"""Where the recorded ComfyUI transcripts are, and how to read one.

The transcripts live in the repository (``tests/data/comfyui-0.3.64``, see its README), so a bare
clone runs every test; nothing here looks outside the checkout.

Lives in its own module (not in conftest.py) so that any test can ``from contract_data import ...``:
several folders have a conftest.py, and ``from conftest import`` can pick the wrong one.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

CONTRACT_DIR = Path(__file__).resolve().parent / "data" / "comfyui-0.3.64"


def load_transcript(name: str) -> Any:
    """One recorded transcript from ``CONTRACT_DIR`` (``name`` without .json)."""
    return json.loads((CONTRACT_DIR / f"{name}.json").read_text())


def without_tracebacks(body: Any) -> Any:
    """A 400 body of POST /prompt without the (path-dependent) tracebacks of its node errors."""
    body = copy.deepcopy(body)
    for entry in body.get("node_errors", {}).values():
        for err in entry["errors"]:
            err["extra_info"].pop("traceback", None)
    return body

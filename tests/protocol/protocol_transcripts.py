"""Loading the recorded ComfyUI transcripts for the protocol tests (no server needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CONTRACT_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "comfyui-contract"
if not CONTRACT_DIR.is_dir():
    CONTRACT_DIR = Path(os.environ.get("COMFYUI_CONTRACT_DIR", "../shared/comfyui-contract")).resolve()


def transcript(name: str) -> dict[str, Any]:
    return json.loads((CONTRACT_DIR / f"{name}.json").read_text())


def names(prefix: str) -> list[str]:
    return sorted(p.stem for p in CONTRACT_DIR.glob(f"{prefix}*.json"))


def response_body(name: str, step: int = -1) -> Any:
    """The body of a single-request transcript, or of step ``step`` of a multi-step one."""
    record = transcript(name)
    if "response" in record:
        return record["response"]["body"]
    return record["steps"][step]["response"]["body"]

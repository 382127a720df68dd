"""Loading the recorded ComfyUI transcripts for the protocol tests (no server needed)."""

from __future__ import annotations

import json
from typing import Any

from contract_data import CONTRACT_DIR


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

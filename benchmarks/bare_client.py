"""The bare ComfyUI client the benchmarks compare the hook against: the least a script can do.

Open ``/ws?clientId=…``, POST /prompt, read socket frames until ``executing`` with ``node: null``
for this prompt, then GET /history/<id> and list the output files. No retries, no validation, no
fallback — the floor the hook's overhead is measured from.

Invariant: every socket read has a timeout, so a run ends within ``timeout`` seconds or raises.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import requests
import websocket


class BareClient:
    """One keep-alive HTTP session to ``base_url``; one WebSocket per run, like the hook."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.ws_base = "ws" + self.base_url[len("http") :] + "/ws?clientId="
        self.session = requests.Session()

    def run(self, workflow: dict[str, Any], timeout: float = 60.0) -> tuple[list[str], float]:
        """Submit, wait for the end marker, read history. Returns (output files, end-marker time)."""
        client_id = uuid.uuid4().hex
        ws = websocket.create_connection(self.ws_base + client_id, timeout=timeout)
        try:
            answer = self.session.post(
                self.base_url + "/prompt", json={"prompt": workflow, "client_id": client_id}, timeout=timeout
            )
            answer.raise_for_status()
            prompt_id = answer.json()["prompt_id"]
            deadline = time.monotonic() + timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"prompt {prompt_id} did not end within {timeout} s")
                ws.settimeout(remaining)
                frame = ws.recv()
                if not isinstance(frame, str):
                    continue  # previews
                message = json.loads(frame)
                data = message.get("data") or {}
                if (
                    message.get("type") == "executing"
                    and data.get("node") is None
                    and data.get("prompt_id") == prompt_id
                ):
                    ended = time.time()
                    break
        finally:
            ws.close()
        history = self.session.get(f"{self.base_url}/history/{prompt_id}", timeout=timeout).json()
        outputs = history[prompt_id]["outputs"]
        files = [
            f"{item.get('type')}/{item.get('subfolder')}/{item['filename']}"
            for node in outputs.values()
            for items in node.values()
            if isinstance(items, list)
            for item in items
            if isinstance(item, dict) and "filename" in item
        ]
        return files, ended

    def close(self) -> None:
        self.session.close()

"""A batch against a real ComfyUI (COMFYUI_URL); skipped without it.

Other people may use the same server: every item gets a random colour (nothing is served from
ComfyUI's cache) and only this batch's prompts are ever cancelled.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from hooks.hook_helpers import fast_hook
from operators.support import FakeTI, make_context

from airflow_comfy.batch.options import make_options
from airflow_comfy.batch.task import batch_for_task

from .support import LOG, manifest_lines

pytestmark = pytest.mark.live


def test_live_batch_records_successes_and_a_value_comfyui_rejects(
    live_url: str, contract_workflows: dict, tmp_path: Path
) -> None:
    hook = fast_hook(live_url, read_timeout=60)
    base = random.randint(0, 0xFFFF00)
    items = [{"key": f"k{n}", "1.color": base + n, "3.blur_radius": 2} for n in range(4)]
    items.append({"key": "too-blurry", "1.color": base + 9, "3.blur_radius": 999})  # max is 31
    options = make_options(items, tmp_path / "out", max_failed=1, check_interval=0.5, progress_interval=5)
    ti = FakeTI("live_batch", run_id=f"live-{random.getrandbits(48):x}")
    run = batch_for_task(hook, make_context(ti), LOG, options, contract_workflows["scale_blur_save"])
    summary = run.run()
    assert (summary.succeeded, summary.failed) == (4, 1)
    lines = {line["key"]: line for line in manifest_lines(tmp_path / "out")}
    assert Counter(line["status"] for line in lines.values()) == Counter({"succeeded": 4, "failed": 1})
    rejected = lines["too-blurry"]["error"]
    assert "3" in rejected and "ImageBlur" in rejected and "blur_radius" in rejected
    for n in range(4):
        [path] = lines[f"k{n}"]["outputs"]
        assert Path(path).read_bytes()[:8] == bytes.fromhex("89504e470d0a1a0a")
        assert lines[f"k{n}"]["started_at"] and lines[f"k{n}"]["finished_at"]

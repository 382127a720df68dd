"""A batch when servers go away or lose prompts: failover, the lost rule, every server gone."""

from __future__ import annotations

from pathlib import Path

import pytest
from operators.support import wait_until

from airflow_comfy.exceptions import ComfyUIConnectionError
from airflow_comfy.testing import StandInServer

from .support import make_run, manifest_lines, pool_hook


def test_items_waiting_on_a_server_that_goes_away_move_to_another(tmp_path: Path, in_thread) -> None:
    with StandInServer(base_dir=tmp_path / "a") as a, StandInServer(base_dir=tmp_path / "b") as b:
        a.hold()
        b.hold()
        items = [{"key": f"k{n}"} for n in range(6)]
        run = make_run(pool_hook(a, b), items, tmp_path / "o", unreachable_grace=1.0)
        done = in_thread(run.run)
        wait_until(lambda: len(a.submissions) == 2 and len(b.submissions) == 2, what="both servers fed")
        stranded = set(b.submissions)
        b.stop()  # gone: its socket, its queue
        a.hold(False)
        summary = done.result(timeout=90)
        assert (summary.succeeded, summary.failed) == (6, 0)
        lines = manifest_lines(tmp_path / "o")
        assert {line["server"] for line in lines} == {a.url}
        assert stranded <= set(a.submissions)  # moved, under the same prompt ids


@pytest.mark.parametrize("resubmit_lost", [True, False])
def test_prompts_a_restart_lost(
    standin: StandInServer, tmp_path: Path, in_thread, resubmit_lost: bool
) -> None:
    standin.hold()
    run = make_run(pool_hook(standin), [{"key": "a"}, {"key": "b"}], tmp_path / "o", resubmit_lost=resubmit_lost,
                   max_failed=2)  # fmt: skip
    done = in_thread(run.run)
    wait_until(lambda: len(standin.submissions) == 2, what="both submitted")
    standin.restart()  # queue and history gone
    standin.hold(False)
    summary = done.result(timeout=60)
    lines = {line["key"]: line for line in manifest_lines(tmp_path / "o")}
    if resubmit_lost:
        assert summary.succeeded == 2 and len(standin.submissions) == 4
        assert lines["a"]["attempts"] == 2
    else:
        assert summary.failed == 2 and len(standin.submissions) == 2
        assert "was lost by" in lines["a"]["error"] and "resubmit_lost is off" in lines["a"]["error"]


def test_a_batch_whose_servers_are_all_gone_fails_and_a_retry_finishes_it(tmp_path: Path, in_thread) -> None:
    items = [{"key": "a"}, {"key": "b"}, {"key": "c"}]
    with StandInServer(base_dir=tmp_path / "old") as old:
        old.hold()
        run = make_run(pool_hook(old), items, tmp_path / "o", unreachable_grace=1.0, cancel_on_kill=False)
        done = in_thread(run.run)
        wait_until(lambda: len(old.submissions) == 2, what="two submitted")
        old.stop()
        with pytest.raises(ComfyUIConnectionError, match="unreachable for more than 1 s"):
            done.result(timeout=60)
    assert {line["key"] for line in manifest_lines(tmp_path / "o")} == set()
    with StandInServer(base_dir=tmp_path / "new") as new:  # the replacement (its journal entries are unknown)
        summary = make_run(pool_hook(new), items, tmp_path / "o", try_number=2).run()
        assert summary.succeeded == 3 and len(new.submissions) == 3


def test_a_server_that_cannot_run_the_workflow_is_left_out(tmp_path: Path) -> None:
    from PIL import Image

    picture = tmp_path / "only-on-a.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(picture)
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "only-on-a.png"}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "b/in"}},
    }
    with StandInServer(base_dir=tmp_path / "a") as a, StandInServer(base_dir=tmp_path / "b") as b:
        pool_hook(a).upload_image(picture, filename="only-on-a.png", subfolder="")
        summary = make_run(pool_hook(a, b), [{"key": f"k{n}", "9.filename_prefix": f"b/{n}"} for n in range(6)],
                           tmp_path / "o", workflow=workflow).run()  # fmt: skip
        assert (summary.succeeded, summary.failed) == (6, 0)
        assert len(a.submissions) == 6 and b.submissions == []

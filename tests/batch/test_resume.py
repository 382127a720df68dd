"""A retried batch: finished items are skipped, prompts in flight re-attached, nothing runs twice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from operators.support import wait_until

from airflow_comfy.exceptions import ComfyUIWorkflowError
from airflow_comfy.testing import StandInServer

from .support import gate_workflow, gated_items, make_run, manifest_lines, pool_hook


def _kill_with_two_done(standin: StandInServer, out: Path, in_thread, location: str | None = None, **opts):
    """A first try of 6 gated items killed once two finished and two more are in flight."""
    run = make_run(pool_hook(standin), gated_items(6), location or out, workflow=gate_workflow(), **opts)
    done = in_thread(run.run)
    standin.gates.release("g0")
    standin.gates.release("g1")
    wait_until(
        lambda: run.ledger.succeeded == 2 and len(run.ledger.in_flight) == 2, what="two done, two more sent"
    )
    standin.gates.wait_blocked("g2")
    in_flight = {entry.item.key for entry in run.ledger.in_flight.values()}
    run.kill("the test killed the task")
    with pytest.raises(Exception, match="stopped"):
        done.result(timeout=60)
    return in_flight


def test_a_killed_batch_resumes_without_running_anything_twice(
    standin: StandInServer, tmp_path: Path, in_thread
) -> None:
    out = tmp_path / "out"
    in_flight = _kill_with_two_done(standin, out, in_thread, cancel_on_kill=False)  # a worker that died
    assert in_flight == {"k2", "k3"}
    assert {line["key"] for line in manifest_lines(out)} == {"k0", "k1"}  # a valid partial manifest
    first = list(standin.submissions)
    for n in range(2, 6):
        standin.gates.release(f"g{n}")
    summary = make_run(pool_hook(standin), gated_items(6), out, workflow=gate_workflow(), try_number=2).run()
    assert (summary.succeeded, summary.earlier, summary.total) == (6, 2, 6)
    assert Counter(standin.submissions).most_common(1)[0][1] == 1  # no prompt id posted twice
    assert set(first) <= set(standin.submissions) and len(standin.submissions) == 6
    lines = manifest_lines(out)
    assert sorted(line["key"] for line in lines) == [f"k{n}" for n in range(6)]
    assert not (out / "manifest.pending.jsonl").exists()


def test_prompts_cancelled_by_the_kill_are_submitted_again_by_the_retry(
    standin: StandInServer, tmp_path: Path, in_thread
) -> None:
    out = tmp_path / "out"
    in_flight = _kill_with_two_done(standin, out, in_thread)  # on_kill cancels them
    for n in range(6):
        standin.gates.release(f"g{n}")
    summary = make_run(pool_hook(standin), gated_items(6), out, workflow=gate_workflow(), try_number=2).run()
    assert (summary.succeeded, summary.earlier) == (6, 2)
    twice = {pid for pid, n in Counter(standin.submissions).items() if n > 1}
    keys = {line["prompt_id"]: line["key"] for line in manifest_lines(out)}
    assert {keys[pid] for pid in twice} <= in_flight  # only what the kill cancelled ran again
    assert sorted(keys.values()) == [f"k{n}" for n in range(6)]


def test_a_retry_with_an_object_storage_manifest_looks_for_unrecorded_prompts(
    standin: StandInServer, tmp_path: Path, in_thread, memory_storage: str
) -> None:
    location = f"{memory_storage}/run"
    # The journal is synced at most every hour here: the retry cannot trust it and asks the server.
    in_flight = _kill_with_two_done(
        standin, tmp_path, in_thread, location=location, cancel_on_kill=False, manifest_sync_interval=3600
    )
    assert in_flight == {"k2", "k3"}
    for n in range(2, 6):
        standin.gates.release(f"g{n}")
    summary = make_run(
        pool_hook(standin), gated_items(6), location, workflow=gate_workflow(), try_number=2
    ).run()
    assert summary.succeeded == 6
    assert Counter(standin.submissions).most_common(1)[0][1] == 1
    from airflow_comfy.batch import read_manifest

    lines = list(read_manifest(location))
    assert sorted(line["key"] for line in lines) == [f"k{n}" for n in range(6)]
    assert all(line["outputs"][0].startswith(f"{location}/{line['key']}/") for line in lines)


def test_a_manifest_of_other_work_is_refused(standin: StandInServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    make_run(pool_hook(standin), [{"key": "a", "1.color": 1}], out).run()
    with pytest.raises(ComfyUIWorkflowError, match=r"already lists item 'a' \(item 0\) for other work"):
        make_run(pool_hook(standin), [{"key": "a", "1.color": 2}], out).run()


def test_items_finished_earlier_are_not_rendered_again(standin: StandInServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    items = [{"key": f"k{n}"} for n in range(3)]
    make_run(pool_hook(standin), items, out).run()
    summary = make_run(pool_hook(standin), [*items, {"key": "k3"}], out, try_number=2).run()
    assert (summary.succeeded, summary.earlier, summary.total) == (4, 3, 4)
    assert len(standin.submissions) == 4


def test_failures_of_earlier_tries_count_against_the_budget(standin: StandInServer, tmp_path: Path) -> None:
    from airflow_comfy.exceptions import ComfyUIBatchFailedError

    out = tmp_path / "out"
    items = [{"key": "good"}, {"key": "bad", "77.color": 1}]
    with pytest.raises(ComfyUIBatchFailedError):
        make_run(pool_hook(standin), items, out).run()
    with pytest.raises(ComfyUIBatchFailedError, match="item 'bad': override '77' matches no node") as again:
        make_run(pool_hook(standin), items, out, try_number=2).run()
    assert again.value.counts["failed"] == 1 and again.value.counts["finished_earlier"] == 2
    assert len(standin.submissions) == 1  # the good item ran once; the bad one was not tried again

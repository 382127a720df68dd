"""A batch against stand-in servers: results, slots, failures, hostile items, uploads, pools."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest
from operators.support import wait_until

from airflow_comfy.batch.records import item_folder
from airflow_comfy.exceptions import ComfyUIBatchFailedError, ComfyUIValidationError
from airflow_comfy.testing import StandInServer

from .support import fail_capable_workflow, gate_workflow, gated_items, make_run, manifest_lines, pool_hook


def test_every_item_is_rendered_once_and_recorded(standin: StandInServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    items = [{"key": f"sku-{n}", "1.color": n * 1000} for n in range(7)]
    summary = make_run(pool_hook(standin), items, out).run()
    assert (summary.total, summary.succeeded, summary.failed) == (7, 7, 0)
    assert summary.manifest == f"{out}/manifest.jsonl"
    lines = manifest_lines(out)
    assert sorted(line["key"] for line in lines) == [f"sku-{n}" for n in range(7)]
    assert len(standin.submissions) == 7 and len(set(standin.submissions)) == 7
    for line in lines:
        assert line["status"] == "succeeded" and line["error"] is None
        assert line["overrides"] == {"1.color": int(line["key"][4:]) * 1000}
        assert line["prompt_id"] in standin.submissions and line["server"] == standin.url
        [path] = line["outputs"]
        assert Path(path).is_file() and Path(path).is_relative_to(out / line["key"])
        assert line["queued_at"] <= line["started_at"] <= line["finished_at"]
    assert not (out / "manifest.pending.jsonl").exists()  # the journal goes when the batch is complete


def test_at_most_max_in_flight_prompts_per_server(standin: StandInServer, tmp_path: Path, in_thread) -> None:
    run = make_run(
        pool_hook(standin), gated_items(5), tmp_path / "out", workflow=gate_workflow(), max_in_flight=2
    )
    done = in_thread(run.run)
    standin.gates.wait_blocked("g0")
    wait_until(lambda: len(standin.submissions) == 2, what="two submissions")
    reads = sum(1 for _m, path in standin.requests if path.endswith("/queue"))
    wait_until(
        lambda: sum(1 for _m, p in standin.requests if p.endswith("/queue")) >= reads + 3, what="rounds"
    )
    assert len(standin.submissions) == 2  # rounds went by, no slot was free
    for n in range(5):
        standin.gates.release(f"g{n}")
    assert done.result(timeout=60).succeeded == 5


def test_failed_items_are_recorded_and_the_budget_decides(standin: StandInServer, tmp_path: Path) -> None:
    items = [{"key": "ok1"}, {"key": "melt", "9.images": ["5", 0]}, {"key": "ok2"}]
    summary = make_run(
        pool_hook(standin), items, tmp_path / "a", workflow=fail_capable_workflow(), max_failed=1
    ).run()
    assert (summary.succeeded, summary.failed) == (2, 1)
    [failed] = [line for line in manifest_lines(tmp_path / "a") if line["status"] == "failed"]
    assert (
        failed["key"] == "melt" and "the GPU melted" in failed["error"] and "StandInFail" in failed["error"]
    )

    run = make_run(pool_hook(standin), items, tmp_path / "b", workflow=fail_capable_workflow(), max_failed=0)
    with pytest.raises(ComfyUIBatchFailedError, match=r"1 item\(s\) of the batch failed") as caught:
        run.run()
    assert "item 'melt' (item 1)" in str(caught.value) and "the GPU melted" in str(caught.value)
    assert caught.value.counts["failed"] == 1


def test_a_fraction_budget_is_judged_on_all_items(standin: StandInServer, tmp_path: Path) -> None:
    items = [{"key": f"k{n}"} for n in range(9)] + [{"key": "melt", "9.images": ["5", 0]}]
    summary = make_run(
        pool_hook(standin), items, tmp_path / "o", workflow=fail_capable_workflow(), max_failed=0.1
    ).run()
    assert (summary.succeeded, summary.failed) == (9, 1)


def test_hostile_items_fail_alone_with_their_place(standin: StandInServer, tmp_path: Path) -> None:
    csv = tmp_path / "items.csv"
    csv.write_text('key,1.color,1.width\na,1,16\nb,2\nc,3,16\n"d,4,16\ne,5,16\n')
    out = tmp_path / "out"
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text(
        '{"key": "x", "77.seed": 1}\n{"key": "y", "1.nonsense": 2}\n{"key": "z", "1.width": -5}\n'
    )
    summary = make_run(pool_hook(standin), csv, out, max_failed=10).run()
    lines = {line["key"]: line for line in manifest_lines(out)}
    assert lines["a"]["status"] == lines["c"]["status"] == "succeeded"
    assert lines["1"]["error"] == "2 fields where the header has 3"  # line 3: its key is its position
    assert summary.failed >= 2  # b, and the unterminated quote swallowing the rest
    summary = make_run(pool_hook(standin), jsonl, tmp_path / "out2", max_failed=10).run()
    lines = {line["key"]: line for line in manifest_lines(tmp_path / "out2")}
    assert "override '77' matches no node" in lines["x"]["error"]
    assert "nonsense" in lines["y"]["error"]
    assert "width" in lines["z"]["error"] and lines["z"]["prompt_id"] is None
    assert summary.failed == 3 and len(standin.submissions) == 2  # a, c of the CSV; nothing of these


def test_a_rejected_workflow_fails_before_anything_is_submitted(
    standin: StandInServer, tmp_path: Path
) -> None:
    workflow = fail_capable_workflow()
    workflow["1"]["inputs"]["width"] = "wide"
    with pytest.raises(ComfyUIValidationError, match=r"EmptyImage"):
        make_run(pool_hook(standin), [{"key": "a"}], tmp_path / "o", workflow=workflow).run()
    assert standin.submissions == []


def test_each_distinct_input_file_is_uploaded_once(standin: StandInServer, tmp_path: Path) -> None:
    from PIL import Image

    pictures = []
    for n in range(2):
        pictures.append(tmp_path / f"p{n}.png")
        Image.new("RGB", (8, 8), (n * 100, 0, 0)).save(pictures[-1])
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "b/in"}},
    }
    items = [{"key": f"k{n}", "inputs": {"1": str(pictures[n % 2])}} for n in range(6)]
    summary = make_run(pool_hook(standin), items, tmp_path / "o", workflow=workflow).run()
    assert summary.succeeded == 6
    assert sum(1 for m, p in standin.requests if m == "POST" and p.endswith("/upload/image")) == 2


def test_items_spread_over_the_servers_of_a_pool(tmp_path: Path) -> None:
    with StandInServer(base_dir=tmp_path / "a") as a, StandInServer(base_dir=tmp_path / "b") as b:
        summary = make_run(pool_hook(a, b), [{"key": f"k{n}"} for n in range(12)], tmp_path / "o").run()
        assert summary.succeeded == 12
        assert len(a.submissions) + len(b.submissions) == 12 and a.submissions and b.submissions
        servers = Counter(line["server"] for line in manifest_lines(tmp_path / "o"))
        assert servers == Counter({a.url: len(a.submissions), b.url: len(b.submissions)})


@pytest.mark.parametrize(("key", "folder"), [("sku-1", "sku-1"), ("../etc", None), ("", None), ("a/b", None)])
def test_item_folders_stay_inside_output_dir(key: str, folder: str | None) -> None:
    name = item_folder(key)
    assert "/" not in name and name not in ("", ".", "..")
    if folder:
        assert name == folder
    assert item_folder("a/b") != item_folder("a_b")


def test_a_stop_signal_ends_the_batch_and_cancels_its_prompts(
    standin: StandInServer, tmp_path: Path, in_thread
) -> None:
    stop = threading.Event()
    run = make_run(pool_hook(standin), gated_items(4), tmp_path / "o", workflow=gate_workflow())
    run.stop_signal = stop
    done = in_thread(run.run)
    standin.gates.wait_blocked("g0")
    wait_until(lambda: len(standin.submissions) == 2, what="two submissions")
    run.kill("the test stopped it")
    with pytest.raises(Exception, match="stopped"):
        done.result(timeout=60)
    standin.gates.release("g0")
    standin.wait_idle()
    states = {pid: standin.engine.history.get(pid) for pid in standin.submissions}
    assert all(entry is None or entry["status"]["status_str"] != "success" for entry in states.values())


def test_validation_runs_once_per_set_of_overridden_names(
    standin: StandInServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_comfy.batch import prepare

    calls: list[frozenset[str]] = []
    real = prepare.validate_prompt

    def counting(workflow, info, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(frozenset(workflow))
        return real(workflow, info, **kwargs)

    monkeypatch.setattr(prepare, "validate_prompt", counting)
    items = [{"key": f"c{n}", "1.color": n} for n in range(5)] + [
        {"key": f"w{n}", "1.width": 8 + n} for n in range(5)
    ]
    assert make_run(pool_hook(standin), items, tmp_path / "o").run().succeeded == 10
    assert len(calls) == 2  # {1.color} once, {1.width} once; the workflow itself once before (prepare_for)


def test_a_kill_cancels_only_this_batchs_prompts(standin: StandInServer, tmp_path: Path, in_thread) -> None:
    from operators.support import gated_workflow, state_of, submit

    theirs = submit(standin, gated_workflow("theirs", prefix="other/x"))  # someone else's, queued first
    run = make_run(pool_hook(standin), gated_items(2), tmp_path / "o", workflow=gate_workflow())
    done = in_thread(run.run)
    wait_until(lambda: len(standin.submissions) == 3, what="the batch's two prompts queued")
    run.kill("the test killed the task")
    with pytest.raises(Exception, match="stopped"):
        done.result(timeout=60)
    assert state_of(standin, theirs) in ("running", "pending")
    standin.gates.release("theirs")
    wait_until(lambda: state_of(standin, theirs) == "success", what="their prompt finished")

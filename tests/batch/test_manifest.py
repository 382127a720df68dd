"""The manifest and journal of a batch: whole lines, torn lines, object storage, resume state."""

from __future__ import annotations

import json
from pathlib import Path

from airflow_comfy.batch.manifest import JOURNAL, MANIFEST, Manifest, read_manifest


def _line(key: str, status: str = "succeeded", prompt_id: str | None = "p") -> dict[str, object]:
    return {"key": key, "position": 0, "status": status, "prompt_id": prompt_id}


def test_lines_are_on_disk_as_soon_as_written(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path / "out")
    manifest.submitted({"key": "a", "position": 0, "prompt_id": "pa", "server": "http://s", "queued_at": "x"})
    manifest.finished(_line("a"))
    # Not closed: a killed task leaves exactly this.
    assert [r["key"] for r in read_manifest(str(tmp_path / "out"))] == ["a"]
    assert (tmp_path / "out" / JOURNAL).read_text().count("\n") == 1
    manifest.close(complete=True)
    assert not (tmp_path / "out" / JOURNAL).exists()


def test_resume_state_from_both_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    journal = [
        {"key": "a", "position": 0, "prompt_id": "pa", "server": "http://s1", "queued_at": "t", "attempt": 1},
        {"key": "b", "position": 1, "prompt_id": "pb", "server": "http://s2", "queued_at": "t", "attempt": 2},
    ]
    (out / JOURNAL).write_text("".join(json.dumps(r) + "\n" for r in journal))
    (out / MANIFEST).write_text(json.dumps({**_line("a", prompt_id="pa"), "position": 0}) + "\n")
    state = Manifest(out).load_state()
    assert set(state.finished) == {"a"} and state.finished["a"].prompt_id == "pa"
    assert list(state.submitted) == ["b"]  # a finished since
    assert state.submitted["b"].server == "http://s2" and state.submitted["b"].attempt == 2


def test_a_torn_last_line_is_skipped_and_cut_before_appending(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text(json.dumps(_line("a")) + "\n" + '{"key": "b", "sta')
    assert [r["key"] for r in read_manifest(str(out))] == ["a"]
    manifest = Manifest(out)
    assert set(manifest.load_state().finished) == {"a"}
    manifest.finished(_line("c"))
    manifest.close(complete=False)
    assert [r["key"] for r in read_manifest(str(out / MANIFEST))] == ["a", "c"]


def test_object_storage_is_staged_and_synced_whole(memory_storage: str) -> None:
    from airflow.sdk import ObjectStoragePath

    location = f"{memory_storage}/run1"
    manifest = Manifest(location, sync_interval=3600)
    assert not manifest.exact
    manifest.load_state()
    manifest.finished(_line("a"))  # the first line is synced at once (nothing there yet is older)
    manifest.finished(_line("b"))  # within the interval: only staged
    remote = ObjectStoragePath(f"{location}/{MANIFEST}")
    assert [r["key"] for r in read_manifest(location)] == ["a"]
    manifest.close(complete=True)
    assert [r["key"] for r in read_manifest(location)] == ["a", "b"]
    assert remote.exists() and not ObjectStoragePath(f"{location}/{JOURNAL}").exists()
    again = Manifest(location)
    assert set(again.load_state().finished) == {"a", "b"}
    again.close(complete=False)

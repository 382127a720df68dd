"""The manifest of a batch: one JSON line per finished item, written next to the outputs.

Two files in ``output_dir`` (a local folder or an object-storage URI):

- ``manifest.jsonl``: one line per *finished* item (``succeeded`` or ``failed``) with its key,
  position, overrides, input files, prompt id, server, output paths, queued/started/finished times
  (ISO 8601, UTC) and error text; appended as items finish;
- ``manifest.pending.jsonl``: the journal of submissions (key, position, prompt id, server, time),
  appended *before* each prompt is posted; it is what a retry re-attaches from, and it is removed
  when the batch ends with nothing left in flight.

Downstream tasks read ``manifest.jsonl`` (:func:`read_manifest`); only the batch reads the journal.

Invariants: a line is written whole and flushed before the batch goes on (a killed task leaves
complete lines, at worst one torn last line, which readers skip); for a local folder the journal
line of a prompt is on disk before its POST, so an item with no line was never posted; in object
storage (no appends) both files are kept in a local staging folder and copied whole to their
places every ``sync_interval`` seconds and at the end, so the copies there are always valid,
possibly a few seconds old (:mod:`airflow_comfy.batch.runner` says what a retry does about that);
nothing here holds more than one line in memory except :func:`load_state`'s small per-key index.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

MANIFEST = "manifest.jsonl"
JOURNAL = "manifest.pending.jsonl"
FINAL = frozenset({"succeeded", "failed"})
MAX_ERRORS_KEPT = 5


@dataclass(frozen=True)
class Finished:
    """What the batch keeps of a finished item (the full line stays in the file)."""

    status: str
    prompt_id: str | None
    position: int
    try_number: int = 1


@dataclass(frozen=True)
class Submitted:
    """A journal line: the item was (about to be) posted as ``prompt_id`` to ``server``."""

    key: str
    position: int
    prompt_id: str
    server: str
    queued_at: str
    attempt: int = 1


@dataclass
class ManifestState:
    """What earlier tries left: finished items by key, and submissions not finished since."""

    finished: dict[str, Finished]
    submitted: dict[str, Submitted]
    errors: list[str] = field(default_factory=list)  # the first failures recorded (for the task's error)


def is_remote(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def join(location: str, name: str) -> str:
    return location.rstrip("/") + "/" + name


def _lines(handle: IO[str]) -> Iterator[dict[str, Any]]:
    for line in handle:
        if not line.endswith("\n"):
            return  # a torn last line (the writer was killed mid-line): not a record
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("key"), str):
            yield record


def read_manifest(location: str) -> Iterator[dict[str, Any]]:
    """The records of the manifest at ``location`` (the file, or the folder holding ``manifest.jsonl``)."""
    target = location if location.endswith(".jsonl") else join(location, MANIFEST)
    if is_remote(target):
        from airflow.sdk import ObjectStoragePath

        path = ObjectStoragePath(target)
        with path.open("r", encoding="utf-8") as handle:
            yield from _lines(handle)
        return
    with open(target.removeprefix("file://"), encoding="utf-8") as handle:
        yield from _lines(handle)


class Manifest:
    """The manifest and journal of one batch in ``output_dir`` (see the module docstring)."""

    def __init__(self, output_dir: str | os.PathLike[str], *, sync_interval: float = 10.0) -> None:
        self.location = os.fspath(output_dir)
        self.remote = is_remote(self.location)
        self.sync_interval = sync_interval
        self.path = join(self.location, MANIFEST)
        if self.remote:
            self._local = tempfile.mkdtemp(prefix="airflow-comfy-manifest-")
        else:
            self._local = self.location.removeprefix("file://")
            os.makedirs(self._local, exist_ok=True)
        self._handles: dict[str, IO[str]] = {}
        self._synced_at = float("-inf")  # the first line is copied at once
        self._dirty = False

    @property
    def exact(self) -> bool:
        """Whether an item missing from the journal is known never to have been posted."""
        return not self.remote

    def _local_path(self, name: str) -> str:
        return os.path.join(self._local, name)

    def load_state(self) -> ManifestState:
        """Read what earlier tries wrote (from object storage into the staging folder first)."""
        if self.remote:
            self._fetch(MANIFEST)
            self._fetch(JOURNAL)
        finished: dict[str, Finished] = {}
        submitted: dict[str, Submitted] = {}
        errors: list[str] = []
        for record in self._read_local(MANIFEST):
            if record.get("status") == "failed" and len(errors) < MAX_ERRORS_KEPT:
                errors.append(f"item {record['key']!r}: {record.get('error')}")
            if record.get("status") in FINAL:
                finished[record["key"]] = Finished(
                    record["status"],
                    record.get("prompt_id"),
                    int(record.get("position", -1)),
                    int(record.get("try_number") or 1),
                )
        for record in self._read_local(JOURNAL):
            key = record["key"]
            if key not in finished and isinstance(record.get("prompt_id"), str):
                submitted[key] = Submitted(
                    key,
                    int(record.get("position", -1)),
                    record["prompt_id"],
                    str(record.get("server") or ""),
                    str(record.get("queued_at") or ""),
                    int(record.get("attempt") or 1),
                )
        return ManifestState(finished, submitted, errors)

    def _read_local(self, name: str) -> Iterator[dict[str, Any]]:
        path = self._local_path(name)
        if not os.path.exists(path):
            return
        self._repair(path)
        with open(path, encoding="utf-8") as handle:
            yield from _lines(handle)

    @staticmethod
    def _repair(path: str) -> None:
        """Drop a torn last line, so that the next append starts on a line of its own."""
        with open(path, "rb+") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            if size == 0:
                return
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return
            handle.seek(max(0, size - 65536))
            data = handle.read()
            cut = data.rfind(b"\n")
            handle.truncate(size - len(data) + cut + 1 if cut >= 0 else 0)

    def _fetch(self, name: str) -> None:
        from airflow.sdk import ObjectStoragePath

        remote = ObjectStoragePath(join(self.location, name))
        if remote.exists():
            with remote.open("rb") as source, open(self._local_path(name), "wb") as target:
                shutil.copyfileobj(source, target, 1024 * 1024)

    # --- writing ------------------------------------------------------------------------------------

    def submitted(self, record: Mapping[str, Any]) -> None:
        """A journal line, on disk before the prompt is posted."""
        self._append(JOURNAL, record)

    def finished(self, record: Mapping[str, Any]) -> None:
        """A manifest line for a finished item."""
        self._append(MANIFEST, record)

    def _append(self, name: str, record: Mapping[str, Any]) -> None:
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = open(self._local_path(name), "a", encoding="utf-8")  # noqa: SIM115
        handle.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
        handle.flush()
        self._dirty = True
        self.sync()

    def sync(self, *, force: bool = False) -> None:
        """Copy the staged files to object storage when due (or ``force``); nothing to do locally."""
        if not self.remote or not (self._dirty or force):
            return
        if not force and time.monotonic() - self._synced_at < self.sync_interval:
            return
        from airflow.sdk import ObjectStoragePath

        for name in (MANIFEST, JOURNAL):
            local = self._local_path(name)
            if not os.path.exists(local):
                continue
            remote = ObjectStoragePath(join(self.location, name))
            remote.parent.mkdir(parents=True, exist_ok=True)
            with open(local, "rb") as source, remote.open("wb") as target:
                shutil.copyfileobj(source, target, 1024 * 1024)
        self._synced_at = time.monotonic()
        self._dirty = False

    def close(self, *, complete: bool) -> None:
        """Flush everything; ``complete`` (nothing in flight, every item finished) drops the journal."""
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        if complete:
            self._drop(JOURNAL)
        self.sync(force=True)
        if self.remote:
            shutil.rmtree(self._local, ignore_errors=True)

    def _drop(self, name: str) -> None:
        local = self._local_path(name)
        if os.path.exists(local):
            os.unlink(local)
        if self.remote:
            from airflow.sdk import ObjectStoragePath

            remote = ObjectStoragePath(join(self.location, name))
            if remote.exists():
                remote.unlink()

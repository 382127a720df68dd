"""The items of a batch: where they come from and what one item asks for.

A batch runs one workflow once per item. Items come from a list (inline, or an upstream task's
XCom), or from a JSON Lines or CSV file, local or in object storage (``s3://…``, ``gs://…``,
``file://…``, read through Airflow's ``ObjectStoragePath``). A file is read as a stream: one line
or row at a time, never whole.

What one raw item (a JSON object, a CSV row) asks for:

- the structured form ``{"key": …, "overrides": {…}, "inputs": {…}}`` (any of the three), or
- a flat record. With ``fields`` (``{"column": "override target"}``, e.g.
  ``{"prompt": "Positive Prompt.text"}``) the named columns become overrides and the other columns
  are ignored; without it, every column except the key column is itself an override target
  (``{"6.text": "a cat", "3.seed": 7}``). ``input_fields`` maps columns holding a file (path or URI)
  to input targets, as the operator's ``inputs=`` takes them.

The key names the item in the manifest, in folders and in errors: the ``key_field`` column (default
``key`` when present), else the item's position (``"0"``, ``"1"``, …).

Invariants: items are yielded in their order, each with its position and, for files, its line;
an item that cannot be read (a malformed line or row, a non-object, an empty or repeated key) is
yielded as an :class:`ItemError` naming the item where it is, never raised, so one bad row fails
one item (a repeated key is reported as ``<key>@<position>``, never under the first item's key);
no function here reads more than one line or row ahead.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from airflow_comfy.exceptions import ComfyUIWorkflowError

ItemsSource = Iterable[Any] | str | os.PathLike[str]
_STRUCTURED = frozenset({"key", "overrides", "inputs"})


@dataclass(frozen=True)
class BatchItem:
    """One item: its key, position in the source, and the overrides and input files it asks for."""

    key: str
    position: int
    overrides: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, str] = field(default_factory=dict)
    where: str = ""  # "line 7 of items.csv", "item 3"

    def describe(self) -> str:
        return f"item {self.key!r} ({self.where})" if self.where else f"item {self.key!r}"


@dataclass(frozen=True)
class ItemError:
    """An item that could not be read; ``key`` is its key when it was readable, else its position."""

    key: str
    position: int
    where: str
    message: str

    def describe(self) -> str:
        return f"item {self.key!r} ({self.where}): {self.message}"


@dataclass(frozen=True)
class ItemSpec:
    """How raw items become :class:`BatchItem` (the operator's parameters of the same names)."""

    key_field: str | None = None
    fields: Mapping[str, str] | None = None
    input_fields: Mapping[str, str] | None = None


def is_file_source(items: Any) -> bool:
    return isinstance(items, str | os.PathLike)


def describe_source(items: Any) -> str:
    return os.fspath(items) if is_file_source(items) else f"a list of {_len(items)} items"


def _len(items: Any) -> str:
    try:
        return str(len(items))
    except TypeError:
        return "streamed"


def read_items(items: ItemsSource, spec: ItemSpec) -> Iterator[BatchItem | ItemError]:
    """Every item of ``items`` in order (see the module docstring); keys are checked for repeats."""
    seen: dict[str, str] = {}
    for position, where, raw in _raw_items(items):
        item = to_item(raw, position, where, spec)
        if isinstance(item, BatchItem):
            first = seen.get(item.key)
            if first is not None:  # recorded under a key of its own, so the first one's line stands
                message = f"the key {item.key!r} was already used by {first}"
                yield ItemError(f"{item.key}@{position}", position, where, message)
                continue
            seen[item.key] = where
        yield item


def count_items(items: ItemsSource) -> int:
    """How many items ``items`` holds (a second streamed pass over a file)."""
    if not is_file_source(items):
        return sum(1 for _ in items)  # type: ignore[union-attr]
    return sum(1 for _ in _raw_items(items))


def to_item(raw: Any, position: int, where: str, spec: ItemSpec) -> BatchItem | ItemError:
    """One raw item as a :class:`BatchItem`, or the :class:`ItemError` saying what is wrong with it."""
    if isinstance(raw, ItemError):
        return raw
    if not isinstance(raw, Mapping):
        return ItemError(
            str(position), position, where, f"an item must be an object, got {type(raw).__name__}"
        )
    key_field = spec.key_field or "key"
    key = raw.get(key_field)
    if key is None and spec.key_field:
        return ItemError(str(position), position, where, f"it has no {spec.key_field!r} (the key field)")
    key = str(position) if key is None else str(key).strip()
    if not key:
        return ItemError(str(position), position, where, f"its key ({key_field!r}) is empty")
    if set(raw) <= _STRUCTURED and ("overrides" in raw or "inputs" in raw):
        overrides, inputs = raw.get("overrides") or {}, raw.get("inputs") or {}
        if not isinstance(overrides, Mapping) or not isinstance(inputs, Mapping):
            return ItemError(key, position, where, "'overrides' and 'inputs' must be objects")
        return BatchItem(key, position, dict(overrides), {str(k): str(v) for k, v in inputs.items()}, where)
    return _flat_item(raw, key, position, where, spec)


def _flat_item(
    raw: Mapping[str, Any], key: str, position: int, where: str, spec: ItemSpec
) -> BatchItem | ItemError:
    key_field = spec.key_field or "key"
    input_fields = dict(spec.input_fields or {})
    missing = [name for name in [*(spec.fields or {}), *input_fields] if name not in raw]
    if missing:
        return ItemError(key, position, where, f"it has no field {', '.join(map(repr, missing))}")
    if spec.fields is not None:
        overrides = {target: raw[name] for name, target in spec.fields.items()}
    else:
        overrides = {str(k): v for k, v in raw.items() if k != key_field and k not in input_fields}
    inputs = {}
    for name, target in input_fields.items():
        value = raw[name]
        if not isinstance(value, str | os.PathLike) or not os.fspath(value).strip():
            return ItemError(key, position, where, f"its input file field {name!r} is empty")
        inputs[target] = os.fspath(value).strip()
    return BatchItem(key, position, overrides, inputs, where)


# --- sources ------------------------------------------------------------------------------------------


def _raw_items(items: ItemsSource) -> Iterator[tuple[int, str, Any]]:
    if not is_file_source(items):
        if isinstance(items, Mapping):
            raise ComfyUIWorkflowError(
                "items must be a list of objects (or a .jsonl / .csv file), got an object"
            )
        for position, raw in enumerate(items):  # type: ignore[union-attr]
            yield position, f"item {position}", raw
        return
    source = os.fspath(items)
    name = source.rsplit("/", 1)[-1]
    lowered = name.lower().removesuffix(".gz")
    if lowered.endswith(".csv"):
        reader = _csv_rows
    elif lowered.endswith((".jsonl", ".ndjson", ".json")):
        reader = _jsonl_rows
    else:
        raise ComfyUIWorkflowError(f"Cannot read items from {source}: use a .jsonl or .csv file (or a list)")
    with _open_text(source) as handle:
        yield from reader(handle, name)


@contextmanager
def _open_text(source: str) -> Iterator[IO[str]]:
    if "://" in source and not source.startswith("file://"):
        from airflow.sdk import ObjectStoragePath

        path = ObjectStoragePath(source)
        if not path.exists():
            raise ComfyUIWorkflowError(f"Cannot read items from {source}: no such object")
        binary = path.open("rb")
    else:
        local = source.removeprefix("file://")
        if not os.path.isfile(local):
            raise ComfyUIWorkflowError(f"Cannot read items from {local}: no such file")
        binary = open(local, "rb")  # noqa: SIM115 - closed below
    try:
        if source.endswith(".gz"):
            import gzip

            binary = gzip.GzipFile(fileobj=binary)  # type: ignore[assignment]
        yield io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
    finally:
        binary.close()


def _jsonl_rows(handle: IO[str], name: str) -> Iterator[tuple[int, str, Any]]:
    position = 0
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        where = f"line {number} of {name}"
        try:
            raw: Any = json.loads(line)
        except ValueError as exc:
            raw = ItemError(str(position), position, where, f"not valid JSON ({exc})")
        yield position, where, raw
        position += 1


def _csv_rows(handle: IO[str], name: str) -> Iterator[tuple[int, str, Any]]:
    reader = csv.reader(handle)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise ComfyUIWorkflowError(f"Cannot read the header of {name}: {exc}") from None
    header = [column.strip() for column in header]
    if len(set(header)) != len(header) or not all(header):
        raise ComfyUIWorkflowError(f"The header of {name} has empty or repeated column names: {header}")
    position = 0
    while True:
        where = f"line {reader.line_num + 1} of {name}"
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield position, where, ItemError(str(position), position, where, f"not valid CSV ({exc})")
            position += 1
            continue
        if not row or not any(cell.strip() for cell in row):
            continue
        where = f"line {reader.line_num} of {name}"
        if len(row) != len(header):
            raw: Any = ItemError(
                str(position), position, where, f"{len(row)} fields where the header has {len(header)}"
            )
        else:
            raw = dict(zip(header, row, strict=True))
        yield position, where, raw
        position += 1

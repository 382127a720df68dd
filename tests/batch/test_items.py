"""Items of a batch: sources (inline, JSONL, CSV, object storage), forms, keys, hostile input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_comfy.batch.items import BatchItem, ItemError, ItemSpec, count_items, read_items
from airflow_comfy.exceptions import ComfyUIWorkflowError


def _read(items: object, spec: ItemSpec | None = None) -> list[BatchItem | ItemError]:
    return list(read_items(items, spec or ItemSpec()))  # type: ignore[arg-type]


def test_inline_flat_items_are_overrides_keyed_by_position_or_key() -> None:
    found = _read([{"6.text": "a cat"}, {"key": "dog", "6.text": "a dog", "3.seed": 7}])
    assert found == [
        BatchItem("0", 0, {"6.text": "a cat"}, {}, "item 0"),
        BatchItem("dog", 1, {"6.text": "a dog", "3.seed": 7}, {}, "item 1"),
    ]


def test_structured_form_carries_overrides_and_inputs() -> None:
    [item] = _read([{"key": "a", "overrides": {"3": {"seed": 1}}, "inputs": {"Load Image": "/in/a.png"}}])
    assert item == BatchItem("a", 0, {"3": {"seed": 1}}, {"Load Image": "/in/a.png"}, "item 0")


def test_fields_pick_columns_and_ignore_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "products.csv"
    path.write_text("sku,name,style,notes\nA1,mug,watercolor,x\nB2,lamp,noir,y\n")
    spec = ItemSpec("sku", {"name": "Positive.text", "style": "Style.text"}, None)
    found = _read(path, spec)
    assert [i.key for i in found] == ["A1", "B2"]  # type: ignore[union-attr]
    assert found[0] == BatchItem(
        "A1", 0, {"Positive.text": "mug", "Style.text": "watercolor"}, {}, "line 2 of products.csv"
    )


def test_input_fields_are_files_per_item(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"key": "a", "photo": "s3://b/a.png", "1.seed": 3}) + "\n")
    [item] = _read(path, ItemSpec(input_fields={"photo": "Load Image"}))
    assert item == BatchItem("a", 0, {"1.seed": 3}, {"Load Image": "s3://b/a.png"}, "line 1 of in.jsonl")


def test_a_malformed_csv_row_fails_that_item_only_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("key,1.color\na,1\nb,2,oops\n\nc,3\n")
    found = _read(path)
    assert [type(i).__name__ for i in found] == ["BatchItem", "ItemError", "BatchItem"]
    error = found[1]
    assert isinstance(error, ItemError)
    assert error.describe() == "item '1' (line 3 of rows.csv): 3 fields where the header has 2"
    assert found[2].key == "c" and found[2].where == "line 5 of rows.csv"


def test_bad_json_lines_non_objects_empty_and_repeated_keys_are_item_errors(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"key": "a"}\n{not json\n[1, 2]\n{"key": "  "}\n{"key": "a", "1.seed": 2}\n')
    found = _read(path)
    messages = [i.describe() if isinstance(i, ItemError) else i.key for i in found]
    assert messages[0] == "a"
    assert messages[1].startswith("item '1' (line 2 of items.jsonl): not valid JSON")
    assert messages[2] == "item '2' (line 3 of items.jsonl): an item must be an object, got list"
    assert messages[3] == "item '3' (line 4 of items.jsonl): its key ('key') is empty"
    assert (
        messages[4]
        == "item 'a@4' (line 5 of items.jsonl): the key 'a' was already used by line 1 of items.jsonl"
    )


def test_a_missing_key_or_field_names_the_item() -> None:
    spec = ItemSpec("sku", {"name": "6.text"})
    [no_key, no_field] = _read([{"name": "x"}, {"sku": "A"}], spec)
    assert isinstance(no_key, ItemError) and "has no 'sku' (the key field)" in no_key.message
    assert (
        isinstance(no_field, ItemError) and no_field.describe() == "item 'A' (item 1): it has no field 'name'"
    )


def test_files_are_read_as_a_stream(tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    with path.open("w") as handle:
        for n in range(1000):
            handle.write(json.dumps({"key": f"k{n}", "1.seed": n}) + "\n")
    items = read_items(path, ItemSpec())
    assert next(items).key == "k0"  # type: ignore[union-attr]
    assert count_items(path) == 1000


def test_object_storage_items(memory_storage: str) -> None:
    from airflow.sdk import ObjectStoragePath

    ObjectStoragePath(f"{memory_storage}/in/items.csv").write_text("key,1.seed\nx,1\ny,2\n")
    found = _read(f"{memory_storage}/in/items.csv")
    assert [(i.key, i.where) for i in found] == [("x", "line 2 of items.csv"), ("y", "line 3 of items.csv")]
    assert count_items(f"{memory_storage}/in/items.csv") == 2
    with pytest.raises(ComfyUIWorkflowError, match="no such object"):
        _read(f"{memory_storage}/in/absent.jsonl")


def test_unusable_sources_are_errors_of_the_batch(tmp_path: Path) -> None:
    with pytest.raises(ComfyUIWorkflowError, match="no such file"):
        _read(tmp_path / "absent.csv")
    (tmp_path / "items.txt").write_text("x")
    with pytest.raises(ComfyUIWorkflowError, match=r"use a \.jsonl or \.csv file"):
        _read(tmp_path / "items.txt")
    (tmp_path / "dup.csv").write_text("a,a\n1,2\n")
    with pytest.raises(ComfyUIWorkflowError, match="empty or repeated column names"):
        _read(tmp_path / "dup.csv")

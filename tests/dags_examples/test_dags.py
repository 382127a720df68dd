"""The example DAGs: they import cleanly, and each runs end to end with ``dag.test()`` on the stand-in.

Runs go through :func:`airflow_comfy.testing.dags.run_dag` (migrated DB once per process, connection
``comfyui_default`` pointed at the session's stand-in). ``comfyui_batch_mapped`` covers
``.partial().expand()`` and the deferrable path with the trigger run inline by ``dag.test()``;
``comfyui_batch_products`` the batch operator over a CSV and a downstream task reading its manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from airflow_comfy.testing import StandInServer
from airflow_comfy.testing.dags import run_dag

from .conftest import DAGS_FOLDER

EXAMPLES = {
    "comfyui_single_prompt",
    "comfyui_batch_mapped",
    "comfyui_batch_products",
    "comfyui_batch_deferred",
    "comfyui_submit_then_sense",
    "comfyui_etl_folder",
    "comfyui_assets_producer",
}
# Examples scheduled on something else than None (their schedule is checked in their own test).
SCHEDULED_EXAMPLES = {"comfyui_assets_consumer"}


def test_dagbag_imports_every_example_without_errors(example_outputs: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) >= EXAMPLES | SCHEDULED_EXAMPLES
    for dag_id in EXAMPLES:
        dag = bag.dags[dag_id]
        assert dag is not None and "comfyui" in dag.tags and dag.schedule is None


def test_single_prompt_downloads_its_image(session_standin: StandInServer, example_outputs: Path) -> None:
    red = 0xFF0000
    result = run_dag(
        "comfyui_single_prompt", DAGS_FOLDER, comfyui_url=session_standin.url, run_conf={"color": red}
    )

    result.raise_for_state()
    assert result.task_states == {("generate", -1): "success", ("report", -1): "success"}
    [path] = result.return_value("generate")
    local = Path(path)
    assert local.is_file() and local.is_relative_to(example_outputs / "comfyui_single_prompt")
    assert result.return_value("report") == [{"path": path, "bytes": local.stat().st_size}]
    with Image.open(local) as image:  # run_conf reached the workflow through params
        assert image.convert("RGB").getpixel((image.width // 2, image.height // 2)) == (255, 0, 0)
    prompt_id = result.xcom("generate", "prompt_id")
    assert prompt_id in session_standin.submissions
    assert result.xcom("generate", "outputs")[0]["node_id"] == "4"


def test_batch_mapped_renders_every_variant(session_standin: StandInServer, example_outputs: Path) -> None:
    result = run_dag("comfyui_batch_mapped", DAGS_FOLDER, comfyui_url=session_standin.url)

    result.raise_for_state()
    renders = {key: state for key, state in result.task_states.items() if key[0] == "render"}
    assert renders == {("render", i): "success" for i in range(6)}
    paths = [p for paths in result.mapped_return_values("render") for p in paths]
    assert len(paths) == len(set(paths)) == 6
    assert all(Path(p).is_file() and Path(p).is_relative_to(example_outputs) for p in paths)
    with Image.open(paths[0]) as first, Image.open(paths[1]) as second:
        assert {first.size, second.size} == {(96, 64), (64, 96)}
    prompt_ids = {result.xcom("render", "prompt_id", i) for i in range(6)}
    assert len(prompt_ids) == 6 and prompt_ids <= set(session_standin.submissions)
    assert result.return_value("collect") == 6


def test_batch_products_renders_every_row_and_reports_from_the_manifest(
    session_standin: StandInServer, example_outputs: Path
) -> None:
    import csv

    from airflow_comfy.batch import read_manifest

    with (DAGS_FOLDER / "inputs" / "products_styles.csv").open(newline="") as handle:
        rows = {row["render"]: row for row in csv.DictReader(handle)}
    assert len(rows) == 12

    result = run_dag("comfyui_batch_products", DAGS_FOLDER, comfyui_url=session_standin.url)

    result.raise_for_state()
    assert result.task_states == {("render", -1): "success", ("report", -1): "success"}
    batch = result.return_value("render")
    run_folder = example_outputs / "comfyui_batch_products" / result.run_id
    assert batch == {
        "manifest": f"file://{run_folder}/manifest.jsonl",
        "total": 12,
        "succeeded": 12,
        "failed": 0,
        "finished_earlier": 0,
        "errors": [],
    }
    records = list(read_manifest(batch["manifest"]))
    assert sorted(r["key"] for r in records) == sorted(rows)
    assert {r["status"] for r in records} == {"succeeded"}
    assert not (run_folder / "manifest.pending.jsonl").exists()  # the journal goes once all finished
    prompt_ids = [r["prompt_id"] for r in records]
    assert len(set(prompt_ids)) == 12 and set(prompt_ids) <= set(session_standin.submissions)
    for record in records:
        row = rows[record["key"]]
        assert record["position"] == list(rows).index(record["key"])
        assert record["overrides"] == {
            "Canvas.color": row["color"],
            "Resize.width": row["width"],
            "Resize.height": row["height"],
            "Blur.blur_radius": row["blur_radius"],
        }
        assert record["server"] == session_standin.url and record["error"] is None
        [path] = record["outputs"]
        local = Path(path)
        assert local.is_file() and local.is_relative_to(run_folder / record["key"])
        with Image.open(local) as image:  # the row's size and colour reached the workflow
            assert image.size == (int(row["width"]), int(row["height"]))
            color = int(row["color"])
            center = image.convert("RGB").getpixel((image.width // 2, image.height // 2))
            assert center == (color >> 16, (color >> 8) & 0xFF, color & 0xFF)
        assert record["queued_at"] <= record["started_at"] <= record["finished_at"]
    report = result.return_value("report")
    assert report["succeeded"] == 12 and report["failed"] == 0 and report["failures"] == {}
    assert report["outputs"] == 12 and report["per_server"] == {session_standin.url: 12}
    first_output: dict[str, str] = {}
    for record in records:  # in the manifest's order, as the report reads it
        first_output.setdefault(rows[record["key"]]["product"], record["outputs"][0])
    assert report["samples"] == [first_output[product] for product in sorted(first_output)]


def test_batch_deferred_renders_xcom_items_across_deferrals(
    session_standin: StandInServer, example_outputs: Path
) -> None:
    from airflow_comfy.batch import read_manifest

    result = run_dag("comfyui_batch_deferred", DAGS_FOLDER, comfyui_url=session_standin.url)

    result.raise_for_state()
    assert result.task_states == {
        ("variants", -1): "success",
        ("render", -1): "success",
        ("summary", -1): "success",
    }
    batch = result.return_value("render")
    run_folder = example_outputs / "comfyui_batch_deferred" / result.run_id
    assert (batch["total"], batch["succeeded"], batch["failed"]) == (6, 6, 0)
    records = {r["key"]: r for r in read_manifest(batch["manifest"])}
    assert sorted(records) == [f"blur-{radius}" for radius in range(1, 7)]
    for radius in range(1, 7):
        record = records[f"blur-{radius}"]
        assert record["overrides"] == {"Blur.blur_radius": radius, "Canvas.color": 0x2050A0 + radius}
        [path] = record["outputs"]
        assert Path(path).is_relative_to(run_folder / f"blur-{radius}") and Path(path).is_file()
    assert result.return_value("summary").startswith("6 of 6 rendered, 0 failed")


def test_submit_then_sense(session_standin: StandInServer, example_outputs: Path) -> None:
    result = run_dag("comfyui_submit_then_sense", DAGS_FOLDER, comfyui_url=session_standin.url)

    result.raise_for_state()
    prompt_id = result.return_value("submit")
    assert prompt_id == result.xcom("submit", "prompt_id") and prompt_id in session_standin.submissions
    [server_path] = result.return_value("wait")
    assert server_path.startswith("output/sensed/")
    assert (session_standin.base_dir / server_path).is_file()
    assert result.return_value("use") == server_path


def test_etl_folder_processes_every_input_image(
    session_standin: StandInServer, example_outputs: Path
) -> None:
    result = run_dag("comfyui_etl_folder", DAGS_FOLDER, comfyui_url=session_standin.url)

    result.raise_for_state()
    inputs = sorted((DAGS_FOLDER / "inputs").glob("*.png"))
    processed = {key: state for key, state in result.task_states.items() if key[0] == "process"}
    assert processed == {("process", i): "success" for i in range(len(inputs))}
    paths = result.return_value("summarise")
    assert len(paths) == len(inputs)
    for source, path in zip(inputs, paths, strict=True):
        # The web-UI workflow was converted and run: resized to 128x128, blurred and inverted.
        with Image.open(source) as original, Image.open(path) as image:
            assert image.size == (128, 128)
            r, g, b = original.convert("RGB").getpixel((2, 2))
            assert image.convert("RGB").getpixel((2, 2)) == (255 - r, 255 - g, 255 - b)
        assert Path(path).is_relative_to(example_outputs / "comfyui_etl_folder")
    uploaded = sorted(p.name for p in (session_standin.base_dir / "input" / "etl-inputs").iterdir())
    assert uploaded == [p.name for p in inputs]


def _asset_events(dag_id: str, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(asset uri, extra) of every Asset event the run ``dag_id``/``run_id`` emitted, from the DB."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetModel.uri, AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run_id)
        ).all()
    return [(uri, dict(extra or {})) for uri, extra in rows]


def test_assets_producer_emits_an_event_the_consumer_reads(
    session_standin: StandInServer, example_outputs: Path
) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import Asset

    consumer = DagBag(dag_folder=str(DAGS_FOLDER)).dags["comfyui_assets_consumer"]
    renders = Asset(name="comfyui_renders", uri="comfyui://renders/scale_blur_save")
    assert list(consumer.timetable.asset_condition.objects) == [renders]  # scheduled on the asset

    produced = run_dag("comfyui_assets_producer", DAGS_FOLDER, comfyui_url=session_standin.url)

    produced.raise_for_state()
    [path] = produced.return_value("render")
    assert Path(path).is_file() and Path(path).is_relative_to(example_outputs / "comfyui_assets_producer")
    [(uri, extra)] = _asset_events("comfyui_assets_producer", produced.run_id)
    assert uri == renders.uri
    prompt_id = produced.xcom("render", "prompt_id")
    assert prompt_id in session_standin.submissions
    assert extra["prompt_id"] == prompt_id
    assert extra["paths"] == [path]
    assert extra["comfyui_url"] == session_standin.url
    assert [r["filename"] for r in extra["outputs"]] == [Path(path).name]
    assert extra["outputs"] == produced.xcom("render", "outputs")

    consumed = run_dag("comfyui_assets_consumer", DAGS_FOLDER, comfyui_url=session_standin.url)

    consumed.raise_for_state()
    assert consumed.return_value("use_new_images") == {"prompt_id": prompt_id, "paths": [path]}


def test_batch_mapped_spreads_over_a_pool_of_servers(
    session_standin: StandInServer, example_outputs: Path, tmp_path: Path
) -> None:
    with (
        StandInServer(base_dir=tmp_path / "gpu2") as second,
        StandInServer(base_dir=tmp_path / "gpu3") as third,
    ):
        result = run_dag(
            "comfyui_batch_mapped",
            DAGS_FOLDER,
            comfyui_url=session_standin.url,
            conn_extra={"hosts": [second.url, third.url]},
        )
        result.raise_for_state()
        prompt_ids = [result.xcom("render", "prompt_id", i) for i in range(6)]
        per_server = [
            sum(p in server.submissions for p in prompt_ids) for server in (session_standin, second, third)
        ]
        # The choice is random, weighted against load and this process's own prompts in flight
        # (hooks/pool.py): the batch spreads, though not necessarily over all three.
        assert sum(per_server) == 6 and sum(1 for count in per_server if count) >= 2, per_server
        recorded = {result.xcom("render", "comfyui_url", i) for i in range(6)}
        used = {s.url for s, count in zip((session_standin, second, third), per_server, strict=True) if count}
        assert recorded == used
        assert all(Path(p).is_file() for paths in result.mapped_return_values("render") for p in paths)


def test_assets_consumer_run_alone_skips_and_says_why(example_outputs: Path) -> None:
    """Before any producer run there is no asset event: a skip naming the producer, not an IndexError."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import Asset
    from airflow.sdk.exceptions import AirflowSkipException

    consumer = DagBag(dag_folder=str(DAGS_FOLDER)).dags["comfyui_assets_consumer"]
    renders = Asset(name="comfyui_renders", uri="comfyui://renders/scale_blur_save")
    callable_ = consumer.get_task("use_new_images").python_callable
    with pytest.raises(
        AirflowSkipException, match="no event of asset 'comfyui_renders' yet: run comfyui_assets_producer"
    ):
        callable_(inlet_events={renders: []})

"""LocalExecutor: the docs' deployment, every example DAG triggered through the REST API, no logical date.

One deployment for the module (api-server, scheduler, dag-processor, triggerer started from the
commands of docs/pages/deployment.md; the stand-in ComfyUI runs in this process). Covers: every
example run without a logical date succeeds and writes its files under its run id; the asset event
starts the consumer; a deferrable task's trigger runs in the triggerer process; a triggerer killed
while deferred tasks wait (the stand-in holds their prompts) is replaced and the tasks succeed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_comfy.testing import StandInServer

from .conftest import ARTIFACTS
from .harness import Deployment, free_port, wait_for

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(900)]

EXAMPLES = {
    "comfyui_single_prompt",
    "comfyui_batch_mapped",
    "comfyui_submit_then_sense",
    "comfyui_etl_folder",
    "comfyui_assets_producer",
}
BATCH = "comfyui_batch_mapped"
BATCH_SIZE = 6


@pytest.fixture(scope="module")
def deployment(standin: StandInServer, workdir: Path) -> Iterator[Deployment]:
    settings = {
        "AIRFLOW_PORT": str(free_port()),
        "COMFYUI_URL": standin.url,
        "DEPLOY_DIR": str(workdir / "airflow"),
    }
    # A killed triggerer's triggers move to a live one after this many seconds without a heartbeat.
    extra = {"AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10"}
    deployment = Deployment(workdir / "airflow", ["local"], settings, extra)
    try:
        deployment.setup()
        for name in ("api-server", "scheduler", "dag-processor", "triggerer"):
            deployment.start(name, deployment.command(f"airflow {name}"))
        deployment.wait_ready(EXAMPLES | {"comfyui_assets_consumer"})
        yield deployment
    finally:
        deployment.stop(keep_logs_in=ARTIFACTS / "local")


def release_when_deferred(deployment: Deployment, standin: StandInServer, run_id: str) -> None:
    """Release the held ComfyUI queue once the scheduler has seen every render task defer."""
    wait_for(
        f"the scheduler to see {BATCH}/{run_id} defer",
        lambda: len(deployment.scheduler_saw_deferred(BATCH, run_id, "render")) == BATCH_SIZE,
        timeout=240,
    )
    standin.hold(False)


@pytest.fixture(scope="module")
def runs(deployment: Deployment, standin: StandInServer) -> dict[str, tuple[str, str]]:
    """Every example triggered at once without a logical date; (run_id, final state) per DAG."""
    standin.hold()
    try:
        run_ids = {dag_id: deployment.trigger(dag_id) for dag_id in sorted(EXAMPLES)}
        release_when_deferred(deployment, standin, run_ids[BATCH])
    finally:
        standin.hold(False)
    return {dag_id: (run_id, deployment.wait_run(dag_id, run_id)) for dag_id, run_id in run_ids.items()}


def test_every_example_succeeds_when_triggered_without_a_logical_date(deployment, runs):
    for dag_id, (run_id, state) in runs.items():
        states = deployment.task_states(dag_id, run_id)
        assert state == "success" and set(states.values()) == {"success"}, (dag_id, states)
        assert deployment.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["logical_date"] is None
        tries = {key: ti["try_number"] for key, ti in deployment.task_instances(dag_id, run_id).items()}
        assert set(tries.values()) == {1}, (dag_id, tries)  # nothing needed a retry


def test_outputs_are_written_under_the_run_id(deployment, runs):
    outputs = Path(deployment.env["AIRFLOW_COMFY_OUTPUT_DIR"])
    expected = {"comfyui_single_prompt": 1, BATCH: BATCH_SIZE, "comfyui_etl_folder": 3}
    expected["comfyui_assets_producer"] = 1
    for dag_id, count in expected.items():
        run_id, _ = runs[dag_id]
        files = sorted((outputs / dag_id / run_id).rglob("*.png"))
        assert len(files) == count and all(f.stat().st_size > 0 for f in files), (dag_id, files)
    run_id, _ = runs["comfyui_single_prompt"]
    [path] = deployment.xcom("comfyui_single_prompt", run_id, "generate")
    assert Path(path).is_relative_to(outputs / "comfyui_single_prompt" / run_id)


def test_asset_event_starts_the_consumer(deployment, runs):
    def consumer_run() -> dict | None:
        body = deployment.api("GET", "/dags/comfyui_assets_consumer/dagRuns")
        done = [r for r in body["dag_runs"] if r["state"] in ("success", "failed")]
        return done[0] if done else None

    run = wait_for("the asset-triggered consumer run", consumer_run, timeout=180, interval=2)
    assert run["state"] == "success" and run["run_type"] == "asset_triggered"


def test_deferred_wait_ran_in_the_triggerer(deployment, runs):
    run_id, _ = runs[BATCH]
    triggerers = {
        job["id"] for job in deployment.api("GET", "/jobs", params={"job_type": "TriggererJob"})["jobs"]
    }
    for index in range(BATCH_SIZE):
        logs = deployment.trigger_logs(BATCH, run_id, "render", index)
        assert logs and set(logs) <= triggerers, (index, logs, triggerers)
        [text] = logs.values()  # written by the triggerer: the trigger started, fired and completed
        assert "starting" in text and "Trigger fired event" in text and "'status': 'success'" in text, text


def test_killed_triggerer_is_replaced_and_the_deferred_tasks_succeed(deployment, standin, runs):
    standin.hold()
    try:
        run_id = deployment.trigger(BATCH)
        wait_for(
            "the triggerer to run every trigger",
            lambda: all(deployment.trigger_logs(BATCH, run_id, "render", i) for i in range(BATCH_SIZE)),
            timeout=240,
        )
        [first] = deployment.trigger_logs(BATCH, run_id, "render", 0)
        deployment.kill("triggerer")
        deployment.start("triggerer-2", deployment.command("airflow triggerer"))
        release_when_deferred(deployment, standin, run_id)
    finally:
        standin.hold(False)
    state = deployment.wait_run(BATCH, run_id, timeout=300)
    states = deployment.task_states(BATCH, run_id)
    assert state == "success" and set(states.values()) == {"success"}, states
    for index in range(BATCH_SIZE):
        logs = deployment.trigger_logs(BATCH, run_id, "render", index)
        assert set(logs) == {first, *(set(logs) - {first})} and len(logs) == 2, (index, logs)
        # The killed triggerer started the trigger; the new one started it again and it fired there.
        assert "starting" in logs[first] and "Trigger fired event" not in logs[first], logs[first]
        [second] = set(logs) - {first}
        assert "Trigger fired event" in logs[second] and "'status': 'success'" in logs[second]

"""LocalExecutor: the docs' deployment, every example DAG triggered through the REST API, no logical date.

One deployment for the module (api-server, scheduler, dag-processor, triggerer started from the
commands of docs/pages/deployment.md; the stand-in ComfyUI runs in this process). Covers: every
example run without a logical date succeeds and writes its files under its run id; the asset event
starts the consumer; a deferrable task's trigger runs in the triggerer process; a triggerer killed
while deferred tasks wait (the stand-in holds their prompts) is replaced and the tasks succeed;
in Chromium: log in, the connection form's labels and extra fields, its Test button against the
stand-in, a finished task's two extra links and the output link serving the image (screenshots in
build/deployment-artifacts/).
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_comfy.get_provider_info import get_provider_info, ui_field_behaviour
from airflow_comfy.testing import StandInServer

from .conftest import ARTIFACTS, require_binary
from .harness import Deployment, free_port, wait_for

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(900)]

EXAMPLES = {
    "comfyui_single_prompt",
    "comfyui_batch_mapped",
    "comfyui_batch_products",
    "comfyui_batch_deferred",
    "comfyui_submit_then_sense",
    "comfyui_etl_folder",
    "comfyui_assets_producer",
}
BATCH = "comfyui_batch_mapped"
BATCH_SIZE = 6
TEMPLATE_ERROR = "comfyui_template_error"


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
        shutil.copy(
            Path(__file__).parent / "dags" / f"{TEMPLATE_ERROR}.py",
            deployment.env["AIRFLOW__CORE__DAGS_FOLDER"],
        )
        for name in ("api-server", "scheduler", "dag-processor", "triggerer"):
            deployment.start(name, deployment.command(f"airflow {name}"))
        deployment.wait_ready(EXAMPLES | {"comfyui_assets_consumer", TEMPLATE_ERROR})
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


def test_the_docs_rest_api_commands_trigger_a_run_without_a_logical_date(deployment):
    run = json.loads(deployment.run_block("trigger"))  # curl, as a reader would run it
    assert run["dag_id"] == "comfyui_single_prompt" and run["logical_date"] is None
    assert deployment.wait_run("comfyui_single_prompt", run["dag_run_id"]) == "success"


def test_outputs_are_written_under_the_run_id(deployment, runs):
    outputs = Path(deployment.env["AIRFLOW_COMFY_OUTPUT_DIR"])
    expected = {"comfyui_single_prompt": 1, BATCH: BATCH_SIZE, "comfyui_etl_folder": 3}
    expected["comfyui_assets_producer"] = 1
    expected["comfyui_batch_products"] = 12
    expected["comfyui_batch_deferred"] = 6
    for dag_id, count in expected.items():
        run_id, _ = runs[dag_id]
        files = sorted((outputs / dag_id / run_id).rglob("*.png"))
        assert len(files) == count and all(f.stat().st_size > 0 for f in files), (dag_id, files)
    run_id, _ = runs["comfyui_single_prompt"]
    [path] = deployment.xcom("comfyui_single_prompt", run_id, "generate")
    assert Path(path).is_relative_to(outputs / "comfyui_single_prompt" / run_id)


def test_a_template_error_fails_at_once_without_retries(deployment):
    run_id = deployment.trigger(TEMPLATE_ERROR)  # retry_delay is 10 minutes: a retry would time out
    assert deployment.wait_run(TEMPLATE_ERROR, run_id, timeout=240) == "failed"
    tis = deployment.task_instances(TEMPLATE_ERROR, run_id)
    assert {key: (ti["state"], ti["try_number"]) for key, ti in tis.items()} == {
        ("plain", -1): ("failed", 1),
        ("mapped", 0): ("failed", 1),
        ("mapped", 1): ("failed", 1),
    }
    for task_id, index in tis:
        log = deployment.task_log(TEMPLATE_ERROR, run_id, task_id, index)
        assert "Template error" in log and "'ts_nodash' is undefined" in log and "run_id" in log, log[-3000:]


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
        assert "Waiting for prompt" in text  # the trigger logs its wait (issue 16, item 3)
        task_log = deployment.task_log(BATCH, run_id, "render", index)
        # no error line in a run that did not fail (issue 12, item 10)
        assert "XCom not found" not in task_log


def test_the_deferred_batch_waited_in_the_triggerer(deployment, runs):
    run_id, _ = runs["comfyui_batch_deferred"]
    triggerers = {
        job["id"] for job in deployment.api("GET", "/jobs", params={"job_type": "TriggererJob"})["jobs"]
    }
    logs = deployment.trigger_logs("comfyui_batch_deferred", run_id, "render", -1)
    assert logs and set(logs) <= triggerers, (logs, triggerers)
    text = "\n".join(logs.values())
    assert "Waiting for one of" in text and "Trigger fired event" in text, text
    task_log = deployment.task_log("comfyui_batch_deferred", run_id, "render", -1)
    assert "Batch finished: 6 done, 0 failed" in task_log, task_log[-3000:]


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


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


# -- the UI, in Debian's Chromium driven by Playwright (never a downloaded browser) -------------------
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def page(deployment: Deployment) -> Iterator[Any]:
    """A logged-in page of the UI (user ``admin``, the password from the docs' passwords file)."""
    chromium = require_binary("chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the deployment extra")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(60_000)
            page.goto(deployment.url + "/")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", deployment.password())
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(deployment.url + "/")
            yield page
        finally:
            browser.close()


def test_ui_connection_form_and_test_button(deployment, standin, page, artifacts):
    form = ui_field_behaviour()
    [conn_type] = get_provider_info()["connection-types"]
    page.goto(deployment.url + "/connections")
    page.get_by_role("button", name="Add Connection").click()
    page.fill("input[name=connection_id]", "comfyui_ui")
    page.locator("input[aria-autocomplete=list]").fill("comfyui")
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    for label in form["relabeling"].values():
        expect(dialog.get_by_text(label, exact=True)).to_be_visible()
    assert page.get_attribute("input[name=host]", "placeholder") == form["placeholders"]["host"]
    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    for field in conn_type["conn-fields"].values():
        expect(dialog.get_by_text(field["label"], exact=True)).to_be_visible()
    page.screenshot(path=artifacts / "connection-form.png", full_page=True)

    dialog.get_by_role("button", name="Standard Fields", exact=True).click()
    page.fill("input[name=host]", "127.0.0.1")
    page.fill("input[name=port]", str(standin.port))
    dialog.get_by_role("button", name="Save").click()
    expect(page.get_by_role("cell", name="comfyui_ui", exact=True)).to_be_visible()
    # The form stores every extra field, the unset ones as null: they must read as "not set".
    stored = json.loads(deployment.api("GET", "/connections/comfyui_ui")["extra"])
    assert set(stored) == set(conn_type["conn-fields"]) and set(stored.values()) == {None}

    with page.expect_response(lambda r: r.url.endswith("/api/v2/connections/test")) as tested:
        page.get_by_role("button", name="Test Connection").click()
    result = tested.value.json()
    assert result["status"] is True, result
    expect(page.get_by_text("Test Connection Successful")).to_be_visible()
    expect(
        page.get_by_text(f"Connected to ComfyUI 0.3.64 at http://127.0.0.1:{standin.port}")
    ).to_be_visible()
    page.wait_for_timeout(500)  # let the icon turn green for the screenshot
    page.screenshot(path=artifacts / "connection-tested.png")


def test_ui_task_shows_both_extra_links_and_the_output_link_serves_the_image(
    deployment, runs, page, artifacts
):
    run_id, _ = runs["comfyui_single_prompt"]
    run = urllib.parse.quote(run_id, safe="")
    page.goto(f"{deployment.url}/dags/comfyui_single_prompt/runs/{run}/tasks/generate/details")
    web, output = (
        page.get_by_role("link", name="ComfyUI", exact=True),
        page.get_by_role("link", name="ComfyUI output"),
    )
    expect(web).to_be_visible()
    expect(output).to_be_visible()
    page.screenshot(path=artifacts / "task-extra-links.png")
    assert web.get_attribute("href").rstrip("/") == standin_url(deployment)
    href = output.get_attribute("href")
    assert href.startswith(standin_url(deployment) + "/view?")
    response = page.goto(href)
    assert response.ok and response.headers["content-type"] == "image/png"
    assert response.body().startswith(b"\x89PNG")
    page.screenshot(path=artifacts / "output-image.png")


def standin_url(deployment: Deployment) -> str:
    return json.loads(deployment.env["AIRFLOW_CONN_COMFYUI_DEFAULT"])["host"].rstrip("/")

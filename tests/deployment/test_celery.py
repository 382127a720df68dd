"""CeleryExecutor: the docs' deployment plus the scale page's Celery block, two workers, two servers.

Redis (``redis-server`` from Debian) runs on a free port; two Celery workers run as separate
processes; the ``comfyui_default`` connection names two stand-in servers (``extra.hosts``). A
mapped batch of 20 blocking prompts must spread over both workers and both servers with no prompt
submitted twice. The moment both workers are busy is made deterministic: the stand-ins hold their
queues until more prompts wait than one worker has slots.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_comfy.testing import StandInServer

from .conftest import ARTIFACTS, require_binary
from .harness import Deployment, free_port, wait_for

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(900)]

DAG_ID = "comfyui_batch_20"
WORKERS = ("worker-1", "worker-2")


@pytest.fixture(scope="module")
def second_standin(workdir: Path) -> Iterator[StandInServer]:
    with StandInServer(base_dir=workdir / "comfyui-2") as server:
        yield server


@pytest.fixture(scope="module")
def celery(standin: StandInServer, second_standin: StandInServer, workdir: Path) -> Iterator[Deployment]:
    redis_server = require_binary("redis-server")
    pytest.importorskip("airflow.providers.celery", reason="needs the deployment extra")
    redis_port = free_port()
    root = workdir / "airflow"
    settings = {
        "AIRFLOW_PORT": str(free_port()),
        "COMFYUI_URL": standin.url,
        "DEPLOY_DIR": str(root),
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}",
        "COMFYUI_URL_2": second_standin.url,
    }
    deployment = Deployment(root, ["local", "celery"], settings, {})
    try:
        deployment.setup()
        shutil.copy(
            Path(__file__).parent / "dags" / f"{DAG_ID}.py", deployment.env["AIRFLOW__CORE__DAGS_FOLDER"]
        )
        redis = f"{redis_server} --port {redis_port} --bind 127.0.0.1 --save '' --appendonly no --dir {root}"
        deployment.start("redis", redis)
        for name in ("api-server", "scheduler", "dag-processor"):
            deployment.start(name, deployment.command(f"airflow {name}"))
        for worker in WORKERS:
            deployment.start(
                worker, deployment.command(f'airflow celery worker --celery-hostname "{worker}@')
            )
        deployment.wait_ready({DAG_ID})
        yield deployment
    finally:
        deployment.stop(keep_logs_in=ARTIFACTS / "celery")


def test_a_mapped_batch_spreads_over_both_workers_and_servers(celery, standin, second_standin):
    servers = (standin, second_standin)
    for server in servers:
        server.hold()
    try:
        run_id = celery.trigger(DAG_ID)
        # One worker runs at most --concurrency (4) tasks: a fifth waiting prompt is on the other one.
        wait_for(
            "prompts from both workers",
            lambda: sum(len(s.submissions) for s in servers) >= 5,
            timeout=300,
        )
    finally:
        for server in servers:
            server.hold(False)
    state = celery.wait_run(DAG_ID, run_id, timeout=480)
    states = celery.task_states(DAG_ID, run_id)
    assert state == "success" and states == {("render", i): "success" for i in range(20)}, states

    first, second = (list(s.submissions) for s in servers)
    assert first and second, (first, second)  # both servers got prompts
    assert len(first) + len(second) == len(set(first) | set(second)) == 20  # none submitted twice
    ran_on = {}
    for worker in WORKERS:
        lines = [line for line in celery.tail(worker, 100_000).splitlines() if "Executing workload" in line]
        indexes = {int(m) for line in lines if DAG_ID in line for m in re.findall(r"map_index=(\d+)", line)}
        assert indexes, f"{worker} ran nothing:\n{celery.tail(worker)}"
        ran_on[worker] = indexes
    assert set.union(*ran_on.values()) == set(range(20)) and not set.intersection(*ran_on.values())
    outputs = Path(celery.env["AIRFLOW_COMFY_OUTPUT_DIR"]) / DAG_ID / run_id
    assert len(list(outputs.rglob("*.png"))) == 20

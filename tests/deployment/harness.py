"""A real Airflow deployment started from the commands of the docs, for the deployment tests.

:class:`Deployment` reads the shell blocks marked ``<!-- deployment: NAME -->`` in docs/pages, sets
the ``export NAME=value`` lines the test owns (ports, folders, ComfyUI URLs) to its own values, runs
every other line except the ``… &`` ones with bash (exports, files, ``airflow db migrate``) and
starts each ``… &`` line as a process of its own (own process group, output in ``logs/<name>.log``).
It also talks to the REST API (v2) with a token of the simple auth manager.

Invariants: every process it starts is in its own process group and :meth:`Deployment.stop` kills
every group (TERM, then KILL), also after a failure; every wait has a deadline; servers listen on
127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "docs" / "pages"
_BLOCK = re.compile(r"<!-- deployment: ([\w-]+) -->\s*```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
_EXPORT = re.compile(r"^export ([A-Z_][A-Z0-9_]*)=")
TERMINAL = {"success", "failed"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def doc_blocks() -> dict[str, str]:
    """Every ``<!-- deployment: NAME -->`` shell block of the docs, by name."""
    blocks: dict[str, str] = {}
    for page in sorted(PAGES.glob("*.md")):
        for name, body in _BLOCK.findall(page.read_text(encoding="utf-8")):
            blocks[name] = body
    return blocks


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    """``check()``'s first truthy value, polling until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Deployment:
    """The deployment of the named doc blocks, in ``root``; see the module docstring."""

    def __init__(
        self, root: Path, blocks: list[str], settings: Mapping[str, str], extra_env: Mapping[str, str]
    ) -> None:
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        texts = doc_blocks()
        self.lines = [line for name in blocks for line in texts[name].splitlines()]
        self.settings = dict(settings)
        self.extra_env = dict(extra_env)
        self.env: dict[str, str] = {}
        self.commands: list[str] = []
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._token: str | None = None

    # -- start and stop -------------------------------------------------------------------------
    def setup(self) -> None:
        """Run the blocks' lines except the background ones; keep the environment they export."""
        script, owned = ["set -euo pipefail"], set()
        for line in self.lines:
            code = line.split(" #", 1)[0].rstrip()
            if code.endswith("&"):
                self.commands.append(code[:-1].strip())
                continue
            match = _EXPORT.match(code)
            if match and match.group(1) in self.settings:
                owned.add(match.group(1))
                code = f"export {match.group(1)}={shlex.quote(self.settings[match.group(1)])}"
            script.append(code)
        missing = set(self.settings) - owned
        assert not missing, f"the docs no longer export {sorted(missing)}"
        env_file = self.root / "deployment.env"
        script.append(f"env -0 > {shlex.quote(str(env_file))}")
        base = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        for name in [k for k in base if k.startswith("AIRFLOW")]:
            del base[name]  # nothing of the caller's Airflow settings leaks in
        with open(self.logs / "setup.log", "wb") as out:
            done = subprocess.run(
                ["bash", "-c", "\n".join(script)], cwd=ROOT, env=base, stdout=out, stderr=out, timeout=300
            )
        assert done.returncode == 0, f"setup failed:\n{self.tail('setup')}"
        pairs = env_file.read_bytes().decode().split("\0")
        self.env = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
        self.env.update(self.extra_env)

    def run_block(self, name: str) -> str:
        """Run the docs' block ``name`` with bash in the deployment's environment; its output."""
        script = "set -euo pipefail\n" + doc_blocks()[name]
        done = subprocess.run(
            ["bash", "-c", script], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"block {name} failed: {done.stderr}"
        return done.stdout

    def command(self, starts_with: str) -> str:
        [found] = [c for c in self.commands if c.startswith(starts_with)]
        return found

    def start(self, name: str, command: str, env: Mapping[str, str] | None = None) -> None:
        """Start ``command`` (a line of the docs) as ``name``, with its own log-server ports."""
        words = shlex.split(command)
        own = dict(env or {})
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
            key, _, value = words.pop(0).partition("=")
            own[key] = value
        own.setdefault("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", str(free_port()))
        own.setdefault("AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT", str(free_port()))
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        self.processes[name] = subprocess.Popen(
            words,
            cwd=self.root,
            env={**self.env, **own},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        _kill_group(process, sig)

    def stop(self, keep_logs_in: Path | None = None) -> None:
        """Kill every process group; copy the logs (ours and Airflow's) to ``keep_logs_in``."""
        for process in self.processes.values():  # all at once, so their shutdowns overlap
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for name in list(self.processes):
            self.kill(name, signal.SIGTERM)
        if keep_logs_in is not None:
            shutil.rmtree(keep_logs_in, ignore_errors=True)
            shutil.copytree(self.logs, keep_logs_in / "processes")
            airflow_logs = Path(self.env.get("AIRFLOW_HOME", self.root / "none")) / "logs"
            if airflow_logs.is_dir():
                shutil.copytree(airflow_logs, keep_logs_in / "airflow")

    # -- what happened --------------------------------------------------------------------------
    def tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def diagnosis(self) -> str:
        return "\n".join(f"--- {name} ---\n{self.tail(name)}" for name in ["setup", *self.processes])

    def scheduler_saw_deferred(self, dag_id: str, run_id: str, task_id: str) -> set[int]:
        """Map indexes whose worker exit after ``defer()`` the scheduler has processed.

        Until it has, a trigger that fires at once races that event (Airflow then takes the resumed
        task for "killed externally" and retries it): tests hold the ComfyUI queue until then.
        """
        pattern = re.compile(
            rf"TaskInstance Finished: dag_id={dag_id}, task_id={task_id}, run_id={re.escape(run_id)}, "
            r"map_index=(-?\d+),[^\n]*?, state=deferred,"
        )
        return {int(m) for m in pattern.findall(self.tail("scheduler", 100_000))}

    def trigger_logs(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[int, str]:
        """The trigger's part of a task log, by the id of the triggerer job that ran it."""
        found = {}
        for path in self._task_log_folder(dag_id, run_id, task_id, map_index).glob(
            "attempt=*.log.trigger.*.log"
        ):
            found[int(path.name.rsplit(".", 2)[-2])] = path.read_text(errors="replace")
        return found

    def _task_log_folder(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> Path:
        folder = Path(self.env["AIRFLOW_HOME"]) / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        folder = folder / f"task_id={task_id}"
        return folder / f"map_index={map_index}" if map_index >= 0 else folder

    def task_log(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
        """Every attempt's task log file (written by the worker and, for deferred tasks, the triggerer)."""
        folder = self._task_log_folder(dag_id, run_id, task_id, map_index)
        return "".join(p.read_text(errors="replace") for p in sorted(folder.glob("attempt=*.log")))

    # -- REST API -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.env["AIRFLOW__API__BASE_URL"]

    def password(self) -> str:
        users = json.loads(Path(self.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())
        return users["admin"]

    def token(self) -> str:
        if self._token is None:
            body = {"username": "admin", "password": self.password()}
            response = requests.post(f"{self.url}/auth/token", json=body, timeout=30)
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token()}"}
        response = requests.request(method, f"{self.url}/api/v2{path}", headers=headers, timeout=30, **kwargs)
        assert response.ok, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def wait_ready(self, dag_ids: set[str], timeout: float = 240) -> None:
        """The API answers and every DAG in ``dag_ids`` was parsed and registered."""

        def ready() -> bool:
            for name, process in self.processes.items():
                assert process.poll() is None, f"{name} exited:\n{self.diagnosis()}"
            try:
                listed = self.api("GET", "/dags", params={"limit": 100})
            except requests.RequestException:
                return False
            return dag_ids <= {d["dag_id"] for d in listed["dags"]}

        try:
            wait_for(f"the API and DAGs {sorted(dag_ids)}", ready, timeout, interval=2)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.diagnosis()}") from None

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> str:
        """A run of ``dag_id`` without a logical date (the Airflow 3 default); its run id."""
        body = {"logical_date": None, "conf": dict(conf or {})}
        return self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        def finished() -> str | None:
            state = self.run_state(dag_id, run_id)
            return state if state in TERMINAL else None

        try:
            return wait_for(f"run {dag_id}/{run_id}", finished, timeout, interval=2)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}: {self.task_states(dag_id, run_id)}\n{self.diagnosis()}") from None

    def task_states(self, dag_id: str, run_id: str) -> dict[tuple[str, int], str | None]:
        body = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})
        return {(ti["task_id"], ti["map_index"]): ti["state"] for ti in body["task_instances"]}

    def task_instances(self, dag_id: str, run_id: str) -> dict[tuple[str, int], dict[str, Any]]:
        body = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})
        return {(ti["task_id"], ti["map_index"]): ti for ti in body["task_instances"]}

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1
    ) -> Any:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.api("GET", path, params={"map_index": map_index, "deserialize": True})["value"]


def _kill_group(process: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the group, wait for the leader (KILL after 20 s), then KILL whatever it left behind."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=20)

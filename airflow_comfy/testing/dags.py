"""Run a DAG end to end with ``dag.test()`` against a ComfyUI server, and read back what it did.

    from airflow_comfy.testing.dags import run_dag
    result = run_dag("comfyui_single_prompt", "dags_examples", comfyui_url="http://127.0.0.1:8188")
    result.raise_for_state()                       # the run and every task succeeded, or an error
    print(result.return_value("generate"))         # e.g. the downloaded output paths

For tests, demos and a README "main job": :func:`run_dag` points the connection ``conn_id`` at
``comfyui_url`` (through the ``AIRFLOW_CONN_<ID>`` environment variable, which the Task SDK's
environment-variable secrets backend resolves in and outside tasks), points
``[core] dags_folder`` (and ``airflow.settings.DAGS_FOLDER``, which dag.test()'s bundle sync reads)
at ``dags_folder``, migrates the metadata database once per process, loads
the DAG with a :class:`~airflow.dag_processing.dagbag.DagBag`, runs ``dag.test()`` in this
process (deferred tasks run their trigger inline) and returns a :class:`DagRunResult`.

Invariants:
- failures are never hidden: the result always carries the run's state and the state of every
  task instance (per ``(task_id, map_index)``); nothing here turns a failed run into an exception
  unless asked (:meth:`DagRunResult.raise_for_state`), and a DAG that cannot be loaded raises
  :class:`DagLoadError` with the import errors;
- the environment variables and settings changed for the run are restored afterwards, whatever happens;
- ``dag.test()`` waits as long as the DAG's own bounds say (operator ``timeout``, ``retry_delay``
  of failed tasks with retries left): give test DAGs short bounds.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DagLoadError", "DagRunFailedError", "DagRunResult", "conn_env_var", "ensure_db", "run_dag"]

TaskKey = tuple[str, int]

_DB_LOCK = threading.Lock()
_DB_READY: set[str] = set()


class DagLoadError(RuntimeError):
    """The DAG file could not be imported, or the folder has no DAG with that id."""


class DagRunFailedError(AssertionError):
    """Raised by :meth:`DagRunResult.raise_for_state` when the run or a task did not succeed."""


@dataclass(frozen=True)
class DagRunResult:
    """What one ``dag.test()`` run did.

    :param task_states: the state of every task instance, keyed by ``(task_id, map_index)``
        (``map_index`` is -1 for unmapped tasks); ``None`` for a task that never got a state.
    :param return_values: the ``return_value`` XCom of each task instance that pushed one.
    :param xcoms: every XCom of the run, ``{(task_id, map_index): {key: value}}``.
    """

    dag_id: str
    run_id: str
    state: str
    task_states: dict[TaskKey, str | None]
    return_values: dict[TaskKey, Any] = field(default_factory=dict)
    xcoms: dict[TaskKey, dict[str, Any]] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        """The run succeeded and so did every task instance (skipped ones count as fine)."""
        return self.state == "success" and not self.failed_tasks()

    def failed_tasks(self) -> dict[TaskKey, str | None]:
        """Task instances that neither succeeded nor were skipped."""
        return {key: state for key, state in self.task_states.items() if state not in ("success", "skipped")}

    def return_value(self, task_id: str, map_index: int = -1) -> Any:
        """The ``return_value`` XCom of one task instance (``KeyError`` if it pushed none)."""
        return self.return_values[(task_id, map_index)]

    def mapped_return_values(self, task_id: str) -> list[Any]:
        """The ``return_value`` of every mapped instance of ``task_id``, in map-index order."""
        return [
            value
            for (tid, index), value in sorted(self.return_values.items())
            if tid == task_id and index >= 0
        ]

    def xcom(self, task_id: str, key: str, map_index: int = -1) -> Any:
        """One XCom of one task instance (``KeyError`` if absent)."""
        return self.xcoms[(task_id, map_index)][key]

    def raise_for_state(self) -> None:
        """Raise :class:`DagRunFailedError` naming every task that did not succeed."""
        if self.succeeded:
            return
        tasks = ", ".join(
            f"{task_id}{f'[{index}]' if index >= 0 else ''}={state}"
            for (task_id, index), state in sorted(self.failed_tasks().items())
        )
        raise DagRunFailedError(
            f"DAG run {self.dag_id}/{self.run_id} ended {self.state}; tasks: {tasks or 'all succeeded'}"
        )


def conn_env_var(conn_id: str) -> str:
    """The environment variable Airflow reads connection ``conn_id`` from."""
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def ensure_db() -> None:
    """Create or migrate the metadata database of this process's configuration (once per process)."""
    from airflow.configuration import conf

    key = conf.get("database", "sql_alchemy_conn", fallback="")
    with _DB_LOCK:
        if key in _DB_READY:
            return
        from airflow.utils.db import initdb

        initdb()
        _DB_READY.add(key)


@contextmanager
def _env(values: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


@contextmanager
def _dags_folder_setting(folder: Path) -> Iterator[None]:
    """``airflow.settings.DAGS_FOLDER`` is read once at import; dag.test()'s bundle sync uses it."""
    from airflow import settings

    previous = settings.DAGS_FOLDER
    settings.DAGS_FOLDER = str(folder)
    try:
        yield
    finally:
        settings.DAGS_FOLDER = previous


def run_dag(
    dag_id: str,
    dags_folder: str | os.PathLike[str],
    *,
    comfyui_url: str,
    conn_id: str = "comfyui_default",
    run_conf: dict[str, Any] | None = None,
    conn_extra: Mapping[str, Any] | None = None,
) -> DagRunResult:
    """Run ``dag_id`` from ``dags_folder`` once with ``dag.test()``; see the module docstring.

    :param comfyui_url: the ComfyUI server the connection ``conn_id`` points at for this run.
    :param run_conf: the DAG run's ``conf`` (``params`` of the DAG can be overridden through it).
    :param conn_extra: the connection's ``extra`` (token, headers, timeouts...).
    """
    folder = Path(dags_folder).resolve()
    if not folder.exists():
        raise DagLoadError(f"No such DAG folder: {folder}")
    connection: dict[str, Any] = {"conn_type": "comfyui", "host": comfyui_url}
    if conn_extra:
        connection["extra"] = dict(conn_extra)
    env = {conn_env_var(conn_id): json.dumps(connection), "AIRFLOW__CORE__DAGS_FOLDER": str(folder)}
    ensure_db()  # also initialises Airflow's settings from the caller's environment, before the switch
    with _env(env), _dags_folder_setting(folder):
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(folder))
        dag = bag.dags.get(dag_id)
        if dag is None:
            errors = "".join(f"\n{path}:\n{error}" for path, error in bag.import_errors.items())
            raise DagLoadError(
                f"DAG {dag_id!r} not found in {folder} (found: {sorted(bag.dags) or 'none'})"
                + (f"; import errors:{errors}" if errors else "")
            )
        dag_run = dag.test(run_conf=run_conf)
        return _read_run(dag_id, dag_run.run_id)


def _read_run(dag_id: str, run_id: str) -> DagRunResult:
    """The run's state, task states and XComs, read fresh from the metadata database."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        dag_run = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        ).one()
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        ).all()
        task_states: dict[TaskKey, str | None] = {
            (ti.task_id, ti.map_index): (str(ti.state) if ti.state is not None else None) for ti in tis
        }
        xcoms: dict[TaskKey, dict[str, Any]] = {}
        for row in session.scalars(XComModel.get_many(run_id=run_id, dag_ids=dag_id)).all():
            xcoms.setdefault((row.task_id, row.map_index), {})[row.key] = XComModel.deserialize_value(row)
        state = str(dag_run.state)
    return_values = {key: values["return_value"] for key, values in xcoms.items() if "return_value" in values}
    return DagRunResult(
        dag_id=dag_id,
        run_id=run_id,
        state=state,
        task_states=task_states,
        return_values=return_values,
        xcoms=xcoms,
    )

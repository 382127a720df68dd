"""Helpers of the resilience suite (imported as ``resilience.support``).

- :data:`AUTHS` and :func:`connection_env`: a ``comfyui`` connection with Basic, Bearer or header auth
  and fast retry settings, so every scenario runs once per kind of credential;
- :class:`Guard`: what every scenario checks after it ran — no credential in any log record, captured
  output, exception (message, repr, attributes, chain, traceback) or XCom; no thread or child process
  left behind (after a short bounded settle);
- :func:`run_op`: run ``ComfyUIPromptOperator.execute`` and return ``(result or exception, seconds)``.

Invariant: every wait here is bounded and raises on timeout.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psutil
import pytest
from operators.support import FakeTI, make_context

from airflow_comfy.operators.comfyui import ComfyUIPromptOperator

LOGIN = "airflow-user"
PASSWORD = "s3cr3t-PASSWORD-1234"
TOKEN = "t0ken-BEARER-5678-xyzzy"
API_KEY = "k3y-HEADER-9012-plugh"
BASIC_CREDENTIAL = base64.b64encode(f"{LOGIN}:{PASSWORD}".encode()).decode()
#: Every value that must never show up anywhere the user can see it.
SECRETS = (PASSWORD, TOKEN, API_KEY, BASIC_CREDENTIAL)
AUTHS = ("basic", "bearer", "header")

FAST_EXTRA: dict[str, Any] = {
    "max_retries": 3,
    "retry_min_wait": 0.05,
    "retry_max_wait": 0.2,
    "connect_timeout": 2,
    "read_timeout": 5,
}
#: Operator settings that keep every scenario short.
FAST_OP: dict[str, Any] = {"check_interval": 0.1, "lost_grace": 0.5, "timeout": 20}
_COUNTER = itertools.count()


def connection_env(
    monkeypatch: pytest.MonkeyPatch, url: str, auth: str, **extra: Any
) -> tuple[str, dict[str, str]]:
    """Set ``AIRFLOW_CONN_<ID>`` for ``url`` with ``auth`` credentials; returns (conn id, expected headers)."""
    conn: dict[str, Any] = {"conn_type": "comfyui", "host": url, "extra": {**FAST_EXTRA, **extra}}
    if auth == "basic":
        conn.update(login=LOGIN, password=PASSWORD)
        expected = {"Authorization": f"Basic {BASIC_CREDENTIAL}"}
    elif auth == "bearer":
        conn["extra"]["token"] = TOKEN
        expected = {"Authorization": f"Bearer {TOKEN}"}
    elif auth == "header":
        conn["extra"]["headers"] = {"X-API-Key": API_KEY}
        expected = {"X-API-Key": API_KEY}
    else:  # pragma: no cover - a typo in a test
        raise ValueError(auth)
    conn_id = f"comfy_res_{next(_COUNTER)}_{auth}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn_id, expected


def make_op(conn_id: str, workflow: Any, task_id: str = "render", **kwargs: Any) -> ComfyUIPromptOperator:
    return ComfyUIPromptOperator(
        task_id=task_id, workflow=workflow, comfyui_conn_id=conn_id, **{**FAST_OP, **kwargs}
    )


def run_op(op: ComfyUIPromptOperator, ti: FakeTI) -> tuple[Any, float]:
    """``op.execute`` with ``ti``; returns (return value or the exception raised, seconds taken)."""
    start = time.monotonic()
    try:
        result: Any = op.execute(make_context(ti))
    except Exception as exc:
        result = exc
    return result, time.monotonic() - start


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(0.02)


def exception_texts(exc: BaseException) -> list[str]:
    """Everything a user or a log handler could see of ``exc``: message, repr, attributes, chain."""
    texts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args), repr(vars(current))]
        texts += [repr(note) for note in getattr(current, "__notes__", [])]
        current = current.__cause__ or current.__context__
    texts.append("".join(traceback.format_exception(exc)))
    return texts


def find_secrets(texts: Iterable[str], secrets: Iterable[str] = SECRETS, *, span: int = 12) -> list[str]:
    """The secrets of which any ``span`` consecutive characters occur in ``texts`` (empty when none).

    Pieces, not only whole values: an excerpt cut at 200 characters can show most of a credential.
    """
    blob = "\n".join(texts)
    return [s for s in secrets if any(s[i : i + span] in blob for i in range(max(1, len(s) - span + 1)))]


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@dataclass
class Guard:
    """Collects what a scenario exposed and checks it at teardown (see the module docstring)."""

    caplog: pytest.LogCaptureFixture
    capsys: pytest.CaptureFixture[str]
    threads_before: set[threading.Thread] = field(default_factory=set)
    children_before: set[int] = field(default_factory=set)
    tis: list[FakeTI] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    extra_texts: list[str] = field(default_factory=list)
    _output: list[str] = field(default_factory=list)

    def logs(self) -> str:
        """Every log line so far: stdlib records (caplog) and what structlog printed (the operator's)."""
        captured = self.capsys.readouterr()
        self._output += [captured.out, captured.err]
        records = [*self.caplog.get_records("setup"), *self.caplog.get_records("call")]
        return "\n".join([*(r.getMessage() for r in records), *self._output])

    def ti(self, task_id: str = "render", **kwargs: Any) -> FakeTI:
        ti = FakeTI(task_id, **kwargs)
        self.tis.append(ti)
        return ti

    def seen(self, exc: BaseException) -> BaseException:
        """Record an exception a scenario got, for the secret scan; returns it."""
        self.errors.append(exc)
        return exc

    def text(self, value: str) -> None:
        """Record other user-visible text (e.g. a subprocess's output) for the secret scan."""
        self.extra_texts.append(value)

    def exposed(self) -> list[str]:
        records = [
            *self.caplog.get_records("setup"),
            *self.caplog.get_records("call"),
            *self.caplog.records,
        ]
        texts = []
        for record in records:
            texts.append(record.getMessage())
            if record.exc_info and record.exc_info[1] is not None:
                texts += exception_texts(record.exc_info[1])
        captured = self.capsys.readouterr()
        texts += [*self._output, captured.out, captured.err, *self.extra_texts]
        for exc in self.errors:
            texts += exception_texts(exc)
        for ti in self.tis:
            texts.append(json.dumps(ti.pushes))
        return texts

    def check(self) -> None:
        leaked = find_secrets(self.exposed())
        assert not leaked, f"credentials leaked into logs, output, exceptions or XComs: {leaked}"
        deadline = time.monotonic() + 5.0
        while True:
            threads = [t for t in threading.enumerate() if t not in self.threads_before and t.is_alive()]
            children = _children() - self.children_before
            if not threads and not children:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"left behind: threads {threads}, child processes {sorted(children)}")
            time.sleep(0.05)


def start_guard(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> Guard:
    caplog.set_level(logging.DEBUG)
    return Guard(caplog, capsys, set(threading.enumerate()), _children())

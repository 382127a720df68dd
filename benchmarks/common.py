"""Shared pieces of the benchmarks: the server under test, the machine, small workflows, figures.

By default every benchmark runs the stand-in ComfyUI in a **child process** (so its CPU time and
memory are not counted as the client's), on 127.0.0.1 and an ephemeral port, with a temporary base
directory. With ``COMFYUI_URL`` set, the benchmarks talk to that real server instead.

Invariants: the child process and the temporary folders are always removed on exit (context
managers); every wait on the child has a timeout; the child stops on its own if its parent dies.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.connection
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

_CALL_TIMEOUT = 60.0


def real_url() -> str | None:
    """The real ComfyUI to measure (``COMFYUI_URL``), or ``None`` for the stand-in."""
    url = os.environ.get("COMFYUI_URL", "").strip().rstrip("/")
    return url or None


# --- the server under test -------------------------------------------------------------------------


def _serve(conn: multiprocessing.connection.Connection, base_dir: str, parent: int) -> None:
    """Child process: run a StandInServer and answer the parent's commands until told to stop."""
    from airflow_comfy.testing import StandInServer

    with StandInServer(base_dir=base_dir) as server:
        conn.send(server.url)
        while os.getppid() == parent:  # bounded by the parent's life
            if not conn.poll(1.0):
                continue
            command, arg = conn.recv()
            if command == "stop":
                conn.send(None)
                return
            if command == "requests":  # (method, path) pairs seen since index ``arg``
                conn.send(list(server.requests[arg:]))
            elif command == "request_count":
                conn.send(len(server.requests))
            elif command == "wait_idle":
                try:
                    server.wait_idle(arg)
                    conn.send(True)
                except TimeoutError:
                    conn.send(False)


class StandInProcess:
    """A stand-in ComfyUI in a child process; :meth:`requests` reads what it saw."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve, args=(child, str(base_dir), os.getpid()), name="comfy-standin", daemon=True
        )
        self.url = ""

    def start(self) -> StandInProcess:
        self._proc.start()
        self.url = self._ask_raw(_CALL_TIMEOUT * 2)  # spawn + imports take a few seconds
        return self

    def _ask_raw(self, timeout: float) -> Any:
        if not self._conn.poll(timeout):
            raise TimeoutError("the stand-in process did not answer in time")
        return self._conn.recv()

    def _ask(self, command: str, arg: Any = None, timeout: float = _CALL_TIMEOUT) -> Any:
        self._conn.send((command, arg))
        return self._ask_raw(timeout)

    def requests(self, since: int = 0) -> list[tuple[str, str]]:
        return [tuple(r) for r in self._ask("requests", since)]  # type: ignore[misc]

    def request_count(self) -> int:
        return int(self._ask("request_count"))

    def wait_idle(self, timeout: float) -> bool:
        return bool(self._ask("wait_idle", timeout, timeout=timeout + _CALL_TIMEOUT))

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    def stop(self) -> None:
        if self._proc.is_alive():
            with suppress(TimeoutError, OSError, EOFError):
                self._ask("stop", timeout=30)
            self._proc.join(30)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(10)
        self._conn.close()


@contextmanager
def server_under_test() -> Iterator[tuple[str, StandInProcess | None]]:
    """``(url, stand-in)``: the real server of ``COMFYUI_URL`` (stand-in ``None``) or a fresh stand-in."""
    url = real_url()
    if url:
        yield url, None
        return
    with scratch_dir("comfy-bench-standin-") as base:
        standin = StandInProcess(base).start()
        try:
            yield standin.url, standin
        finally:
            standin.stop()


@contextmanager
def scratch_dir(prefix: str, memory: bool = False) -> Iterator[Path]:
    """A temporary folder, removed on exit; ``memory`` puts it on /dev/shm when there is room (4 GiB)."""
    parent = None
    if memory and os.path.isdir("/dev/shm") and shutil.disk_usage("/dev/shm").free > 4 * 2**30:
        parent = "/dev/shm"
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def quiet_airflow_home() -> None:
    """Point Airflow at a throw-away home before it is imported (no ~/airflow side effects)."""
    if "AIRFLOW_HOME" not in os.environ:
        home = tempfile.mkdtemp(prefix="comfy-bench-airflow-")
        atexit.register(shutil.rmtree, home, ignore_errors=True)
        os.environ["AIRFLOW_HOME"] = home
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


def quiet_logs() -> None:
    """Keep per-prompt info lines out of the figures (call after Airflow is imported)."""
    import logging

    for name in ("airflow_comfy", "airflow.task", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:  # the Task SDK logs through structlog
        import structlog

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    except ImportError:
        pass


# --- workflows -------------------------------------------------------------------------------------


def tiny_workflow(prefix: str, color: int, size: int = 8) -> dict[str, Any]:
    """EmptyImage → SaveImage: milliseconds on both servers; ``color`` defeats ComfyUI's cache."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": 1, "color": color},
        },
        "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def delay_workflow(prefix: str, seconds: float, steps: int = 10, color: int = 0) -> dict[str, Any]:
    """EmptyImage → StandInDelay → SaveImage (stand-in only: the real server has no StandInDelay)."""
    workflow = tiny_workflow(prefix, color)
    workflow["2"] = {
        "class_type": "StandInDelay",
        "inputs": {"image": ["1", 0], "seconds": seconds, "steps": steps},
    }
    workflow["9"]["inputs"]["images"] = ["2", 0]
    return workflow


# --- measuring -------------------------------------------------------------------------------------


def rss_bytes() -> int:
    """Resident memory of this process (Linux /proc)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def machine() -> str:
    """One line naming the machine the figures came from."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {memory:.1f} GiB RAM, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def header(title: str, url: str) -> None:
    print(f"== {title}")
    print(f"   server:  {url} ({'real ComfyUI' if real_url() else 'stand-in in a child process'})")
    print(f"   machine: {machine()}")


@dataclass
class Samples:
    """Durations (seconds) of one contender."""

    name: str
    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def p95(self) -> float:
        ordered = sorted(self.values)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]

    def line(self, unit: float = 1e3, suffix: str = "ms") -> str:
        v = [x * unit for x in self.values]
        return (
            f"{self.name:<28} median {self.median * unit:8.1f} {suffix}   mean {statistics.fmean(v):8.1f}"
            f"   p95 {self.p95 * unit:8.1f}   min {min(v):8.1f}   max {max(v):8.1f}   (n={len(v)})"
        )


def alternate(
    contenders: Sequence[tuple[str, Callable[[int], float]]], runs: int, warmup: int = 2
) -> list[Samples]:
    """Run the contenders in turn (A B A B …), ``runs`` each after ``warmup`` discarded rounds."""
    samples = [Samples(name, []) for name, _ in contenders]
    for index in range(warmup + runs):
        order = list(enumerate(contenders))
        if index % 2:
            order.reverse()  # neither contender always goes first
        for position, (_name, run) in order:
            value = run(index)
            if index >= warmup:
                samples[position].values.append(value)
    return samples


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def now() -> float:
    return time.perf_counter()

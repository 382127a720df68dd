"""The README's main job: run a DAG end to end and say, at the end, what it did and where its files are.

    python -m airflow_comfy.testing.demo    # the README's first DAG, shipped in the package
    python -m airflow_comfy.testing.demo --dags-folder dags_examples --dag comfyui_submit_then_sense

Against the real ComfyUI at ``$COMFYUI_URL`` (or ``--url``) when set, otherwise against a stand-in
server started for the run (needs the ``testing`` extra). Airflow's home (SQLite metadata DB) is
``./.airflow-demo``; downloads of the first DAG go to ``./comfyui-outputs``, those of the
``dags_examples/`` DAGs under ``--output-dir`` (their ``AIRFLOW_COMFY_OUTPUT_DIR``). Airflow's own
log is kept to warnings and errors unless ``--verbose``; the run ends with a summary: the DAG, its
state, each task's state, the output files (downloaded copies, or the files on the server when the
DAG keeps server paths) and how to open them.

Invariants:
- the exit status is 0 exactly when the DAG run and every task in it succeeded (a DAG that keeps
  server-side paths succeeds without local files); 1 when the run did not succeed; 2 when the run
  could not start (no such DAGs folder or DAG, no stand-in without the ``testing`` extra), which is
  said in one line before anything is created on disk;
- every local path printed as an output exists on disk.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_comfy.examples import DAGS_FOLDER, FIRST_DAG_ID

if TYPE_CHECKING:
    from airflow_comfy.testing.dags import DagRunResult

PROG = "python -m airflow_comfy.testing.demo"


class DemoError(Exception):
    """The run cannot start; the message says what to change."""


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dags-folder",
        default=None,
        help="folder with the DAG files (default: the package's first DAG, comfyui_first_dag)",
    )
    parser.add_argument("--dag", default=None, help=f"the DAG id to run (default {FIRST_DAG_ID})")
    parser.add_argument(
        "--url", default=os.environ.get("COMFYUI_URL"), help="a real ComfyUI (default $COMFYUI_URL)"
    )
    parser.add_argument(
        "--output-dir",
        default="comfyui-outputs",
        help="where the dags_examples/ DAGs write their outputs (their AIRFLOW_COMFY_OUTPUT_DIR)",
    )
    parser.add_argument("--airflow-home", default=".airflow-demo", help="AIRFLOW_HOME for the run")
    parser.add_argument("--verbose", action="store_true", help="show Airflow's whole log (INFO and up)")
    return parser.parse_args(argv)


def _check(args: argparse.Namespace) -> tuple[Path, str]:
    """The DAGs folder and DAG id to run; :class:`DemoError` when the run cannot start."""
    if args.dags_folder is None:
        folder, dag_id = DAGS_FOLDER, args.dag or FIRST_DAG_ID
    else:
        folder, dag_id = Path(args.dags_folder).resolve(), args.dag
        if not folder.is_dir():
            raise DemoError(
                f"--dags-folder {args.dags_folder}: no such folder; omit the option to run the DAG "
                f"shipped with the package ({FIRST_DAG_ID}), or give a folder of DAG files"
            )
        if dag_id is None:
            raise DemoError(f"--dag is needed with --dags-folder: which DAG of {folder} should run?")
    if not args.url and not all(importlib.util.find_spec(name) for name in ("aiohttp", "PIL")):
        raise DemoError(
            "the stand-in ComfyUI needs the testing extra: pip install 'airflow-comfy[testing]'"
            " (or pass --url / set COMFYUI_URL to use a real ComfyUI)"
        )
    return folder, dag_id


def _quiet_airflow() -> None:
    """Airflow's log at WARNING (unless the caller set a level) and no third-party deprecation noise."""
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    # A throwaway demo home has no Fernet key, and says so on every task: true, and not the demo's news.
    os.environ.setdefault("AIRFLOW__LOGGING__NAMESPACE_LEVELS", "airflow.models.crypto=ERROR")
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", PendingDeprecationWarning)
    # dag.test() serves the Execution API in-process through FastAPI's TestClient, which warns about
    # its own httpx use (a UserWarning subclass): a third party's note, nothing the user can act on.
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette\.testclient` is deprecated")


@contextmanager
def _server(url: str | None, home: Path) -> Iterator[tuple[str, Path | None]]:
    """The server's URL, and the stand-in's base folder (``None`` for a real server)."""
    if url:
        print(f"Using the ComfyUI at {url}", flush=True)
        yield url.rstrip("/"), None
        return
    from airflow_comfy.testing import StandInServer

    with StandInServer(base_dir=home / "comfyui") as server:
        print(f"Started the stand-in ComfyUI at {server.url} (files under {server.base_dir})", flush=True)
        yield server.url, server.base_dir


def _files(value: Any) -> list[str]:
    """Every existing file path inside a task's return value (lists and dicts are searched)."""
    if isinstance(value, str):  # a path, or a file:// URI (a batch's manifest, object-storage style)
        path = value.removeprefix("file://")
        return [path] if Path(path).is_file() else []
    if isinstance(value, dict):
        return [p for item in value.values() for p in _files(item)]
    if isinstance(value, list | tuple):
        return [p for item in value for p in _files(item)]
    return []


def _server_outputs(result: DagRunResult) -> list[dict[str, Any]]:
    """The output records (XCom ``outputs``) of every task, once per server path."""
    seen: dict[str, dict[str, Any]] = {}
    for _key, xcoms in sorted(result.xcoms.items()):
        for record in xcoms.get("outputs") or []:
            if isinstance(record, dict) and isinstance(record.get("server_path"), str):
                seen.setdefault(record["server_path"], record)
    return list(seen.values())


def summary(result: DagRunResult, *, home: Path, standin_dir: Path | None) -> list[str]:
    """The closing report: DAG and run, task states, output files and how to open them."""
    lines = ["", "=" * 72, f"DAG {result.dag_id}: {result.state}  (run {result.run_id})"]
    for (task_id, map_index), state in sorted(result.task_states.items()):
        label = task_id if map_index < 0 else f"{task_id}[{map_index}]"
        lines.append(f"  {label:<28} {state}")
    local = sorted({p for value in result.return_values.values() for p in _files(value)})
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    if local:
        lines += ["", f"Output files ({len(local)}):", *(f"  {path}" for path in local)]
        media = [path for path in local if not path.endswith(".jsonl")]
        if media:
            lines.append(f"Open one with an image viewer, e.g.: {opener} '{media[0]}'")
        if len(media) < len(local):
            lines.append("A batch's manifest.jsonl lists every item and its outputs, one JSON line each.")
    else:
        records = _server_outputs(result)
        if records:
            lines += ["", f"Output files on the ComfyUI server ({len(records)}), kept there by this DAG:"]
            for record in records:
                copy = standin_dir / record["server_path"] if standin_dir else None
                where = str(copy) if copy is not None and copy.is_file() else record.get("view_url", "")
                lines.append(f"  {record['server_path']}  ->  {where}")
            lines.append(
                "Server paths are relative to ComfyUI's base folder; "
                + ("open the local copies above." if standin_dir else "open the /view URLs in a browser.")
            )
        elif result.succeeded:
            lines += ["", "The run produced no output file."]
    lines.append(f"Airflow home (metadata DB): {home}")
    if not result.succeeded:
        lines.append("The run did not succeed: see the errors above; --verbose shows Airflow's whole log.")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        folder, dag_id = _check(args)
    except DemoError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    home = Path(args.airflow_home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    # Airflow reads its configuration when first imported: set it up before that.
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ["AIRFLOW_COMFY_OUTPUT_DIR"] = str(Path(args.output_dir).resolve())
    if not args.verbose:
        _quiet_airflow()
    from airflow_comfy.testing.dags import DagLoadError, run_dag

    print(f"Running DAG {dag_id} from {folder} (Airflow home {home})", flush=True)
    with _server(args.url, home) as (url, standin_dir):
        try:
            result = run_dag(dag_id, folder, comfyui_url=url)
        except DagLoadError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 2
        lines = summary(result, home=home, standin_dir=standin_dir)
    print("\n".join(lines), flush=True)
    return 0 if result.succeeded else 1


if __name__ == "__main__":
    sys.exit(main())

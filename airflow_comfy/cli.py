"""The ``airflow-comfy`` command: convert web-UI workflows to API JSON and check them against a server.

    airflow-comfy convert UI.json [--object-info FILE | --url URL] [-o OUT.json]
    airflow-comfy validate WORKFLOW.json --url URL [--override KEY=JSON ...]
    airflow-comfy list --url URL

A workflow saved on the server from the web UI is named ``comfyui://workflows/<name>.json`` (read
from the server given with ``--url``); ``list`` shows the saved workflows of a server.

``validate`` converts the workflow if needed and checks it against the server's ``/object_info``
the way POST /prompt would, without submitting anything.

Invariant: this module never imports Airflow (the command must start fast and work without an
Airflow installation's configuration); exit status is 0 on success, 1 when the workflow is
invalid, 2 for usage, file or network problems.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow_comfy.exceptions import ComfyUIError, ComfyUIWorkflowError

EXIT_OK, EXIT_INVALID, EXIT_ERROR = 0, 1, 2


def fetch_object_info(url: str, timeout: float = 60.0) -> dict[str, Any]:
    """GET <url>/object_info with requests; ComfyUIError with the (redacted) URL on failure."""
    import requests

    from airflow_comfy.protocol.urls import redact_url

    target = url.rstrip("/") + "/object_info"
    try:
        response = requests.get(target, timeout=timeout)
    except requests.RequestException as exc:
        raise ComfyUIError(f"cannot reach {redact_url(target)}: {exc.__class__.__name__}: {exc}") from None
    if response.status_code != 200:
        raise ComfyUIError(f"GET {redact_url(target)} answered HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        raise ComfyUIError(f"GET {redact_url(target)} did not answer JSON") from None
    if not isinstance(body, dict):
        raise ComfyUIError(f"GET {redact_url(target)} answered {type(body).__name__}, not an object")
    return body


def _parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ComfyUIWorkflowError(f"--override {item!r} is not KEY=VALUE (e.g. 3.seed=42)")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw  # plain text, e.g. "Positive Prompt.text=a cat"
    return overrides


def _object_info(args: argparse.Namespace) -> dict[str, Any] | None:
    from airflow_comfy.workflows import load_object_info

    if getattr(args, "object_info", None):
        return load_object_info(Path(args.object_info))
    if getattr(args, "url", None):
        return load_object_info(fetch_object_info(args.url))
    return None


def _userdata(url: str) -> Any:
    """Reads the server's user data (saved workflows) over the hooks' transport, without Airflow."""
    from airflow_comfy.hooks.connection import ComfyUISettings
    from airflow_comfy.hooks.transport import Transport
    from airflow_comfy.hooks.userdata import UserDataClient

    return UserDataClient(Transport(ComfyUISettings(conn_id="cli", base_url=url.rstrip("/"), max_retries=1)))


def _workflow(args: argparse.Namespace) -> Any:
    """The workflow argument: a file, or a ``comfyui://`` workflow saved on the ``--url`` server."""
    from airflow_comfy.protocol.urls import redact_url
    from airflow_comfy.workflows import is_saved_source, load_saved_workflow

    if not is_saved_source(args.workflow):
        return Path(args.workflow)
    if not getattr(args, "url", None):
        raise ComfyUIWorkflowError(
            f"{args.workflow} is saved on a server: add --url URL to read it from there"
        )
    saved = load_saved_workflow(_userdata(args.url), args.workflow, where=redact_url(args.url))
    print(f"{saved.source} sha256 {saved.sha256}", file=sys.stderr)
    return saved.workflow


def _list(args: argparse.Namespace) -> int:
    from airflow_comfy.workflows.saved import SCHEME

    names = _userdata(args.url).list_userdata("workflows")
    for name in names:
        print(f"{SCHEME}workflows/{name}")
    print(f"{len(names)} saved workflows", file=sys.stderr)
    return EXIT_OK


def _convert(args: argparse.Namespace) -> int:
    from airflow_comfy.workflows import prepare_workflow

    api = prepare_workflow(
        _workflow(args), object_info=_object_info(args), overrides=_parse_overrides(args.override)
    )
    text = json.dumps(api, indent=2, ensure_ascii=False) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {len(api)} nodes to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    from airflow_comfy.protocol.errors import format_validation_error
    from airflow_comfy.protocol.validation import validate_prompt
    from airflow_comfy.workflows import prepare_workflow

    info = _object_info(args)
    assert info is not None
    api = prepare_workflow(_workflow(args), object_info=info, overrides=_parse_overrides(args.override))
    result = validate_prompt(api, info)
    if result.ok:
        print(f"OK: {len(api)} nodes, outputs {', '.join(result.good_outputs)}")
        return EXIT_OK
    print(format_validation_error({"error": result.error, "node_errors": result.node_errors}))
    return EXIT_INVALID


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airflow-comfy", description="ComfyUI workflow tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="convert a web-UI workflow to API-format JSON")
    convert.add_argument(
        "workflow", help="workflow file (web UI save or API format) or comfyui://workflows/…"
    )
    source = convert.add_mutually_exclusive_group()
    source.add_argument("--object-info", help="saved GET /object_info JSON (.json or .json.gz)")
    source.add_argument("--url", help="ComfyUI server URL to fetch /object_info from")
    convert.add_argument("-o", "--output", help="write the API JSON here instead of stdout")
    validate = commands.add_parser("validate", help="check a workflow against a server's node definitions")
    validate.add_argument(
        "workflow", help="workflow file (web UI save or API format) or comfyui://workflows/…"
    )
    validate.add_argument("--url", required=True, help="ComfyUI server URL")
    listing = commands.add_parser("list", help="list the workflows saved on a server (web UI 'Save')")
    listing.add_argument("--url", required=True, help="ComfyUI server URL")
    for sub in (convert, validate):
        sub.add_argument(
            "--override",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="set an input, e.g. 3.seed=42 or 'Positive Prompt.text=a cat' (VALUE is JSON or text)",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        handlers = {"convert": _convert, "validate": _validate, "list": _list}
        return handlers[args.command](args)
    except ComfyUIWorkflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except ComfyUIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

"""The ``airflow-comfy`` command: convert web-UI workflows to API JSON and check them against a server.

    airflow-comfy convert UI.json [--object-info FILE | --url URL | --conn-id ID] [-o OUT.json]
    airflow-comfy validate WORKFLOW.json (--url URL | --conn-id ID | --object-info FILE) [--override K=V]
    airflow-comfy list (--url URL | --conn-id ID)

A workflow saved on the server from the web UI is named ``comfyui://workflows/<name>.json`` and read
from the server given with ``--url`` or ``--conn-id`` (its SHA-256 is printed on stderr); ``list``
shows the saved workflows of a server.

``validate`` converts the workflow if needed and checks it against the server's ``/object_info``
the way POST /prompt would, without submitting anything.

A server is reached with the package's own client (:class:`~airflow_comfy.hooks.client.ComfyUIClient`),
so it means what it means in a DAG: ``--conn-id`` uses an Airflow connection of type ``comfyui``
(auth, TLS, path prefix, timeouts, retries); ``--url`` is read exactly like such a connection's
host (``127.0.0.1:8188``, ``gpu-1``, ``https://gpu/comfy``; ``user:password@`` in it becomes HTTP
Basic auth, a password alone a Bearer token), with the default TLS verification, timeouts and
retries. ``--max-retries`` overrides the number of retries of either.

Invariants:
- the local files are read before any server is contacted, so a typo costs no request;
- Airflow is imported only to read an Airflow connection (``--conn-id``), never for ``--url``;
- exit status: 0 on success, 1 when the workflow is invalid (not JSON, not a workflow, rejected by
  validation), 2 for usage, file and server problems (a missing file or ``--object-info``, an
  unreachable server, a bad connection).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from airflow_comfy.exceptions import ComfyUIError, ComfyUIWorkflowError

if TYPE_CHECKING:
    from airflow_comfy.hooks.connection import ComfyUISettings

EXIT_OK, EXIT_INVALID, EXIT_ERROR = 0, 1, 2


class UsageError(Exception):
    """A problem with the command line or its files: exit status 2."""


@dataclass(frozen=True)
class _UrlConnection:
    """``--url`` as the host of an Airflow connection (the fields ``settings_from_connection`` reads)."""

    host: str
    conn_id: str = "--url"
    port: int | None = None
    schema: str | None = None
    login: str | None = None
    password: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def extra_dejson(self) -> dict[str, Any]:
        return dict(self.extra)


def url_settings(url: str) -> ComfyUISettings:
    """The client settings for ``--url``: what a connection with this host (and no extras) gives."""
    from airflow_comfy.hooks.connection import settings_from_connection

    text = url.strip()
    parts = urlsplit(text if "://" in text else "//" + text)
    login = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if parts.username is not None or parts.password is not None:
        text = text.replace(parts.netloc, parts.netloc.rpartition("@")[2], 1)
    try:
        return settings_from_connection(_UrlConnection(host=text, login=login, password=password))
    except ValueError as exc:
        raise UsageError(str(exc).replace("Connection '--url': ", "--url: ")) from None


def _settings(args: argparse.Namespace) -> ComfyUISettings | None:
    """Settings for the server named on the command line, or ``None`` when none is."""
    if args.url:
        settings = url_settings(args.url)
    elif args.conn_id:
        settings = _connection_settings(args.conn_id)
    else:
        return None
    if args.max_retries is not None:
        settings = replace(settings, max_retries=args.max_retries)
    return settings


def _connection_settings(conn_id: str) -> ComfyUISettings:
    from airflow_comfy.hooks.comfyui import ComfyUIHook

    hook = ComfyUIHook(comfyui_conn_id=conn_id)
    try:
        return hook.settings
    except ValueError as exc:  # a field of the connection cannot be read
        raise UsageError(str(exc)) from None
    except Exception as exc:  # Airflow's "connection not defined", whatever its class in this version
        raise UsageError(f"--conn-id {conn_id}: {exc}") from None


def fetch_object_info(settings: ComfyUISettings) -> dict[str, Any]:
    """GET /object_info through the client (auth, TLS, bounded retries, errors that say what to check)."""
    from airflow_comfy.hooks.client import ComfyUIClient
    from airflow_comfy.protocol.urls import OBJECT_INFO

    with ComfyUIClient(settings) as client:  # a one-off check asks the server, never a cache
        return client.transport.json_object("GET", OBJECT_INFO)


def _server(args: argparse.Namespace, why: str) -> Any:
    """The client of the server named on the command line; ``why`` says what needs one."""
    from airflow_comfy.hooks.client import ComfyUIClient

    settings = _settings(args)
    if settings is None:
        raise ComfyUIWorkflowError(f"{why}: add --url URL (or --conn-id ID) to read it from there")
    return ComfyUIClient(settings)


def _parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--override {item!r} is not KEY=VALUE (e.g. 3.seed=42)")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw  # plain text, e.g. "Positive Prompt.text=a cat"
    return overrides


def _existing_file(path: str, what: str) -> Path:
    file = Path(path)
    if file.is_dir():
        raise UsageError(f"{what} {path} is a directory, not a file")
    if not file.is_file():
        raise UsageError(f"{what} {path} does not exist")
    return file


def _load_inputs(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
    """The workflow, the saved object_info (if given) and the overrides: everything local, first."""
    from airflow_comfy.workflows import detect_format, is_saved_source, load_object_info, load_workflow

    workflow = _read_workflow(args) if is_saved_source(args.workflow) else None
    if workflow is None:
        workflow = load_workflow(_existing_file(args.workflow, "workflow file"))
    info = None
    if args.object_info:
        info = load_object_info(_existing_file(args.object_info, "--object-info file"))
    overrides = _parse_overrides(args.override)
    if info is None and not (args.url or args.conn_id) and detect_format(workflow) == "ui":
        raise UsageError(
            f"{args.workflow} is a ComfyUI web UI save: converting it needs the server's node definitions; "
            "pass --url URL or --conn-id ID to fetch them, or --object-info FILE (a saved GET /object_info)"
        )
    return workflow, info, overrides


def _read_workflow(args: argparse.Namespace) -> dict[str, Any]:
    """A ``comfyui://`` workflow saved on the server; its content hash goes to stderr."""
    from airflow_comfy.protocol.urls import redact_url
    from airflow_comfy.workflows import load_saved_workflow

    with _server(args, f"{args.workflow} is saved on a server") as client:
        saved = load_saved_workflow(client, args.workflow, where=redact_url(client.base_url))
    print(f"{saved.source} sha256 {saved.sha256}", file=sys.stderr)
    return dict(saved.workflow)


def _list(args: argparse.Namespace) -> int:
    from airflow_comfy.workflows.saved import SCHEME

    with _server(args, "list shows the workflows saved on a server") as client:
        names = client.list_userdata("workflows")
    for name in names:
        print(f"{SCHEME}workflows/{name}")
    print(f"{len(names)} saved workflows", file=sys.stderr)
    return EXIT_OK


def _object_info(args: argparse.Namespace, info: dict[str, Any] | None) -> dict[str, Any] | None:
    from airflow_comfy.workflows import load_object_info

    if info is not None:
        return info
    settings = _settings(args)
    return None if settings is None else load_object_info(fetch_object_info(settings))


def _convert(args: argparse.Namespace) -> int:
    from airflow_comfy.workflows import prepare_workflow

    workflow, info, overrides = _load_inputs(args)
    api = prepare_workflow(workflow, object_info=_object_info(args, info), overrides=overrides)
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

    workflow, info, overrides = _load_inputs(args)
    info = _object_info(args, info)
    if info is None:
        raise UsageError("validate needs the server's node definitions: --url, --conn-id or --object-info")
    api = prepare_workflow(workflow, object_info=info, overrides=overrides)
    result = validate_prompt(api, info)
    if result.ok:
        print(f"OK: {len(api)} nodes, outputs {', '.join(result.good_outputs)}")
        return EXIT_OK
    print(format_validation_error({"error": result.error, "node_errors": result.node_errors}))
    return EXIT_INVALID


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airflow-comfy", description="ComfyUI workflow tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="convert a web-UI workflow to API-format JSON")
    validate = commands.add_parser("validate", help="check a workflow against a server's node definitions")
    listing = commands.add_parser("list", help="list the workflows saved on a server (web UI 'Save')")
    for sub in (convert, validate, listing):
        if sub is not listing:
            sub.add_argument(
                "workflow", help="workflow file (web UI save or API format) or comfyui://workflows/…"
            )
        source = sub.add_mutually_exclusive_group(required=sub is not convert)
        source.add_argument(
            "--url", help="ComfyUI server, read like a connection's host: 127.0.0.1:8188, https://gpu/comfy"
        )
        source.add_argument("--conn-id", help="an Airflow connection of type comfyui (auth, TLS, retries)")
        sub.add_argument(
            "--max-retries",
            type=_count,
            help="retries of connection errors, timeouts, 5xx and 429 (default: the connection's, 5)",
        )
        if sub is listing:
            continue
        source.add_argument("--object-info", help="saved GET /object_info JSON (.json or .json.gz)")
        sub.add_argument(
            "--override",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="set an input, e.g. 3.seed=42 or 'Positive Prompt.text=a cat' (VALUE is JSON or text)",
        )
    convert.add_argument("-o", "--output", help="write the API JSON here instead of stdout")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        handlers = {"convert": _convert, "validate": _validate, "list": _list}
        return handlers[args.command](args)
    except (UsageError, ComfyUIError, OSError) as exc:
        if isinstance(exc, ComfyUIWorkflowError):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_INVALID
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

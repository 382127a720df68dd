"""Command line: ``python -m airflow_comfy.testing --port 8188 --base-dir DIR [--node-delay CLASS=SECONDS]``.

Prints ``ComfyUI stand-in listening on http://HOST:PORT`` on one line, then serves until SIGINT or
SIGTERM. A port in use or a base folder that cannot be created ends the command with one line on
stderr naming the option to change (exit status 2), not a traceback.

Invariant: the process binds a loopback address only and stops its server on exit.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from airflow_comfy.testing.standin import StandInServer


def _delay(text: str) -> tuple[str, float]:
    name, sep, seconds = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CLASS=SECONDS, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m airflow_comfy.testing", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8188, help="port (0 = any free port; default 8188)")
    parser.add_argument("--base-dir", required=True, help="folder for input/, output/ and temp/")
    parser.add_argument(
        "--node-delay",
        type=_delay,
        action="append",
        default=[],
        metavar="CLASS=SECONDS",
        help="extra seconds per execution of a node class, e.g. ImageBlur=1.0 (repeatable)",
    )
    args = parser.parse_args(argv)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        server = StandInServer(
            args.base_dir, host=args.host, port=args.port, node_delays=dict(args.node_delay)
        )
    except ValueError as exc:
        parser.error(str(exc))
    except OSError as exc:
        return _fail(
            f"--base-dir {args.base_dir}: cannot create its folders ({_reason(exc)}); "
            "choose a writable folder"
        )
    try:
        server.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return _fail(
                f"--port {args.port}: already in use on {args.host}; "
                "choose another --port (0 picks a free one)"
            )
        return _fail(f"cannot listen on {args.host}:{args.port} ({_reason(exc)}); change --host or --port")
    try:
        print(f"ComfyUI stand-in listening on {server.url}", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
    return 0


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _fail(message: str) -> int:
    """One line on stderr naming the option to change; exit status 2 (a usage problem)."""
    print(f"python -m airflow_comfy.testing: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

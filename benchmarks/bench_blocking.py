"""Blocking run through ``ComfyUIHook`` vs a bare client, same server, same tiny workflow, alternating.

The hook path is what ``ComfyUIPromptOperator`` does in WebSocket mode: open the socket, submit,
``wait_for_prompt`` (end marker, then /history), outputs known. The bare path is
:class:`bare_client.BareClient`. Target: median(hook) / median(bare) ≤ 1.2.

    .venv/bin/python benchmarks/bench_blocking.py [--runs 30]
    COMFYUI_URL=http://127.0.0.1:8188 .venv/bin/python benchmarks/bench_blocking.py --runs 15
"""

from __future__ import annotations

import argparse
import itertools

from common import (
    alternate,
    header,
    now,
    quiet_airflow_home,
    quiet_logs,
    server_under_test,
    tiny_workflow,
    verdict,
)

quiet_airflow_home()

from bare_client import BareClient  # noqa: E402

from airflow_comfy.hooks.comfyui import ComfyUIHook  # noqa: E402
from airflow_comfy.hooks.connection import ComfyUISettings  # noqa: E402
from airflow_comfy.protocol.ids import new_client_id  # noqa: E402

quiet_logs()

TARGET = 1.2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="runs of each contender (default 30)")
    args = parser.parse_args()
    colors = itertools.count(1000)  # a new color per run: ComfyUI's cache never short-cuts a run
    with server_under_test() as (url, _standin):
        header("blocking run: hook vs bare client", url)
        hook = ComfyUIHook(settings=ComfyUISettings(conn_id="bench", base_url=url))
        bare = BareClient(url)

        def through_hook(_i: int) -> float:
            started = now()
            client_id = new_client_id()
            socket = hook.websocket(client_id).connect()
            answer = hook.submit_prompt(tiny_workflow("bench/hook", next(colors)), client_id=client_id)
            status = hook.wait_for_prompt(
                answer["prompt_id"], client_id=client_id, websocket=socket, timeout=60
            )
            assert status.outputs, status
            return now() - started

        def through_bare(_i: int) -> float:
            started = now()
            files, _ended = bare.run(tiny_workflow("bench/bare", next(colors)))
            assert files
            return now() - started

        try:
            hook_s, bare_s = alternate(
                [("hook (websocket)", through_hook), ("bare client", through_bare)], args.runs
            )
        finally:
            hook.close()
            bare.close()
        print(hook_s.line())
        print(bare_s.line())
        ratio = hook_s.median / bare_s.median
        print(f"ratio hook/bare (median): {ratio:.2f}  target ≤ {TARGET}  {verdict(ratio <= TARGET)}")
        print(f"extra per run (median): {(hook_s.median - bare_s.median) * 1e3:+.1f} ms")


if __name__ == "__main__":
    main()

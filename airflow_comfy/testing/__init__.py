"""A stand-in ComfyUI server for tests and demos: real HTTP + WebSocket, nodes run with Pillow.

Behaves like ComfyUI 0.3.64 as recorded in the contract transcripts (validation errors, queue,
history, /view, uploads, WebSocket event order and targeting), so DAGs and tests run without a GPU.
Needs the ``testing`` extra (aiohttp + pillow).

    from airflow_comfy.testing import StandInServer
    with StandInServer(base_dir=tmp_path) as server:
        ...  # server.url, server.faults, server.gates, server.restart(), server.wait_idle()

Invariant: importing this package starts nothing; only ``StandInServer.start`` opens a socket.
"""

from __future__ import annotations

from airflow_comfy.testing.faults import Faults
from airflow_comfy.testing.gates import Gates
from airflow_comfy.testing.standin import StandInServer

__all__ = ["Faults", "Gates", "StandInServer"]

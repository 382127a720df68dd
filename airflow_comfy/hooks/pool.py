"""Several ComfyUI servers behind one connection: asking each for its load and picking one.

A ``comfyui`` connection may name several servers (``host`` plus ``extra.hosts``), all with the same
auth. Before a submission the hook asks every server ``GET /prompt`` (``exec_info.queue_remaining``:
running plus pending) in parallel and submits to the least loaded reachable one; ties go round robin
(a per-process turn that starts at a random offset, so several workers do not all pick the first).
With capability routing, a server is eligible only if its ``/object_info`` has every node type the
workflow uses (cached per server for :data:`OBJECT_INFO_TTL` seconds).

Invariants:
- a server that cannot be reached or lacks a node type is never chosen, and the reason is kept
  (logged by the hook, listed in the error when no server is eligible);
- the survey is bounded: one request per server (plus /object_info when not cached), each with the
  connection's timeouts and no retries, all in parallel.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_comfy.exceptions import ComfyUIConnectionError, ComfyUIError, ComfyUIWorkflowError
from airflow_comfy.hooks.connection import ComfyUISettings
from airflow_comfy.hooks.transport import Transport
from airflow_comfy.protocol import flows, urls
from airflow_comfy.protocol.states import PromptState, PromptStatus, queue_remaining
from airflow_comfy.workflows.graph import VIRTUAL_TYPES  # the web UI's node types that never run

if TYPE_CHECKING:
    from airflow_comfy.hooks.client import ComfyUIClient

OBJECT_INFO_TTL = 600.0

_TURNS: dict[tuple[str, ...], itertools.count[int]] = {}
_NODE_TYPES: dict[str, tuple[float, frozenset[str]]] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ServerState:
    """What the survey learned about one server."""

    url: str
    queue_remaining: int | None = None
    problem: str | None = None
    missing_nodes: tuple[str, ...] = ()

    @property
    def eligible(self) -> bool:
        return self.problem is None and self.queue_remaining is not None


def required_node_types(workflow: Mapping[str, Any] | None) -> frozenset[str]:
    """The node classes a workflow needs, for API format and (approximately) web-UI saves."""
    if not workflow:
        return frozenset()
    if isinstance(workflow.get("nodes"), list):  # web-UI save: node types, minus UI-only and subgraphs
        subgraphs = (workflow.get("definitions") or {}).get("subgraphs") or []
        subgraph_ids = {str(sg.get("id")) for sg in subgraphs if isinstance(sg, Mapping)}
        nodes = list(workflow["nodes"]) + [
            n for sg in subgraphs if isinstance(sg, Mapping) for n in sg.get("nodes") or []
        ]
        found = {str(n.get("type")) for n in nodes if isinstance(n, Mapping) and n.get("mode") != 2}
        return frozenset(found - VIRTUAL_TYPES - subgraph_ids - {"None"})
    return frozenset(
        str(node["class_type"])
        for node in workflow.values()
        if isinstance(node, Mapping) and node.get("class_type")
    )


def next_turn(servers: tuple[str, ...]) -> int:
    """This process's next round-robin turn for a pool (starting at a random offset)."""
    with _LOCK:
        counter = _TURNS.setdefault(servers, itertools.count(random.randrange(len(servers) or 1)))
        return next(counter)


def pick_least_loaded(states: Iterable[ServerState], turn: int) -> ServerState | None:
    """The eligible server with the shortest queue; ``turn`` breaks ties round robin."""
    eligible = [s for s in states if s.eligible]
    if not eligible:
        return None
    lowest = min(s.queue_remaining or 0 for s in eligible)
    tied = [s for s in eligible if (s.queue_remaining or 0) == lowest]
    return tied[turn % len(tied)]


def _node_types(transport: Transport) -> frozenset[str]:
    url = transport.settings.base_url
    now = time.monotonic()
    cached = _NODE_TYPES.get(url)
    if cached and now - cached[0] < OBJECT_INFO_TTL:
        return cached[1]
    info = transport.json("GET", urls.OBJECT_INFO, retries=0)
    types = frozenset(info) if isinstance(info, Mapping) else frozenset()
    _NODE_TYPES[url] = (now, types)
    return types


def _survey_one(settings: ComfyUISettings, url: str, required: frozenset[str]) -> ServerState:
    transport = Transport(settings.for_server(url))
    try:
        info = transport.json("GET", urls.PROMPT, retries=0)
        remaining = queue_remaining(info)
        missing = tuple(sorted(required - _node_types(transport))) if required else ()
    except ComfyUIError as exc:
        return ServerState(url, problem=f"unreachable or unhealthy: {exc}")
    except (TypeError, ValueError, AttributeError):
        return ServerState(url, problem="GET /prompt did not answer like ComfyUI")
    finally:
        transport.close()
    if missing:
        return ServerState(
            url, remaining, problem=f"lacks node types {', '.join(missing)}", missing_nodes=missing
        )
    return ServerState(url, remaining)


def survey(settings: ComfyUISettings, required: frozenset[str] = frozenset()) -> list[ServerState]:
    """Ask every server of the pool for its load (and node types when ``required``), in parallel."""
    with ThreadPoolExecutor(max_workers=min(len(settings.servers), 16)) as pool:
        return list(pool.map(lambda url: _survey_one(settings, url, required), settings.servers))


def choose(
    settings: ComfyUISettings, required: frozenset[str] = frozenset()
) -> tuple[str, list[ServerState]]:
    """The server to submit to, and the survey; raises when no server is eligible."""
    states = survey(settings, required)
    chosen = pick_least_loaded(states, next_turn(settings.servers))
    if chosen is not None:
        return chosen.url, states
    reasons = "; ".join(f"{s.url}: {s.problem}" for s in states)
    if any(s.missing_nodes for s in states) and all(s.queue_remaining is not None for s in states):
        raise ComfyUIWorkflowError(
            f"No server of connection {settings.conn_id!r} can run this workflow: {reasons}. "
            "Install the missing custom nodes on a server, or remove those nodes from the workflow."
        )
    raise ComfyUIConnectionError(
        f"No server of connection {settings.conn_id!r} is usable: {reasons}", url=", ".join(settings.servers)
    )


def locate(
    clients: Sequence[ComfyUIClient], prompt_id: str, *, strict: bool, log: Any
) -> tuple[ComfyUIClient | None, PromptStatus]:
    """Which client's server knows ``prompt_id`` (asked in the given order), and its status there.

    ``(None, NOT_FOUND)`` when no server has it; with ``strict``, a server that cannot be asked
    raises :class:`ComfyUIConnectionError` instead (the prompt may be there). Each server is asked
    once, without retries: a dead server of the pool costs one refused connection, not a backoff.
    """
    unreachable: list[str] = []
    for client in clients:
        try:
            status = client.transport.run(flows.read_status(prompt_id, retry=False))
        except ComfyUIError as exc:
            log.warning("Could not look for prompt %s on %s: %s", prompt_id, client.base_url, exc)
            unreachable.append(f"{client.base_url} ({exc})")
            continue
        if status.state is not PromptState.NOT_FOUND:
            return client, status
    if strict and unreachable:
        raise ComfyUIConnectionError(
            f"Prompt {prompt_id} is on no reachable server of the connection, and these could not be "
            f"asked: {'; '.join(unreachable)}. Not submitting it elsewhere, which could start a second "
            "job; the task's next retry looks again.",
            url=", ".join(c.base_url for c in clients),
        )
    return None, PromptStatus(prompt_id, PromptState.NOT_FOUND)

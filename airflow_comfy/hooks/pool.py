"""Several ComfyUI servers behind one connection: asking each for its load and picking one.

A ``comfyui`` connection may name several servers (``host`` plus ``extra.hosts``), all with the same
auth. Before a submission the hook asks every server ``GET /prompt`` (``exec_info.queue_remaining``:
running plus pending) in parallel and picks one at random, weighted towards the least loaded
(weight ``1 / (1 + load)²``, :func:`pick`), where the load also counts this process's own
submissions that the survey cannot have seen yet (chosen, and not answered before the survey
began: :func:`reserve`, :func:`landed`). Random, because workers that start together read the
same loads: a strict "least loaded" sends them all to one server.
With capability routing, a server is eligible only if its ``/object_info`` has every node type the
workflow uses (cached per server for :data:`OBJECT_INFO_TTL` seconds).

A server that refused a connection (or did not accept one in time) is remembered as dead by this
process for :data:`DEAD_FOR` seconds: surveys and lookups skip it with one log line instead of
asking it again — unless every server is dead, then all are asked.

Invariants:
- a server that cannot be reached or lacks a node type is never chosen, and the reason is kept
  (logged by the hook, listed in the error when no server is eligible);
- the survey is bounded: one request per server not known dead (plus /object_info when not
  cached), each with the connection's timeouts and no retries, all in parallel;
- the memories (dead servers, submissions in flight) are per process and expire.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_comfy.exceptions import (
    ComfyUIConnectionError,
    ComfyUIError,
    ComfyUITimeoutError,
    ComfyUIWorkflowError,
)
from airflow_comfy.hooks.connection import ComfyUISettings
from airflow_comfy.hooks.transport import Transport
from airflow_comfy.protocol import flows, urls
from airflow_comfy.protocol.states import PromptState, PromptStatus, queue_remaining
from airflow_comfy.workflows.graph import VIRTUAL_TYPES  # the web UI's node types that never run

if TYPE_CHECKING:
    from airflow_comfy.hooks.client import ComfyUIClient

OBJECT_INFO_TTL = 600.0
#: How long a server that refused a connection is skipped by this process, in seconds.
DEAD_FOR = 30.0
#: After this many seconds a submission this process chose a server for is no longer counted.
IN_FLIGHT_TTL = 120.0

_NODE_TYPES: dict[str, tuple[float, frozenset[str]]] = {}
_DEAD: dict[str, float] = {}  # url -> when it refused (monotonic)
_IN_FLIGHT: dict[str, list[list[float | None]]] = {}  # url -> [chosen at, answered at or None]
_RANDOM = random.Random()
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


# --- servers known dead ------------------------------------------------------------------------


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` says the server did not take the connection at all (refused, DNS, connect timeout)."""
    return isinstance(exc, ComfyUIConnectionError | ComfyUITimeoutError) and bool(
        getattr(exc, "never_sent", False)
    )


def note_answer(url: str, exc: BaseException | None) -> None:
    """Remember what a request to ``url`` showed: dead when it refused, alive when it answered."""
    with _LOCK:
        if exc is None:
            _DEAD.pop(url, None)
        elif refused(exc):
            _DEAD[url] = time.monotonic()


def dead_problem(url: str, now: float) -> str | None:
    """Why ``url`` is skipped now (it refused recently), or ``None``."""
    with _LOCK:
        since = _DEAD.get(url)
        if since is None or now - since >= DEAD_FOR:
            _DEAD.pop(url, None)
            return None
    return (
        f"unreachable: it refused a connection {now - since:.0f} s ago; not asked again for "
        f"{DEAD_FOR - (now - since):.0f} s"
    )


# --- submissions in flight ------------------------------------------------------------------------


def reserve(url: str, now: float | None = None) -> None:
    """This process chose ``url`` for a submission (counted in its load until a later survey sees it)."""
    with _LOCK:
        _IN_FLIGHT.setdefault(url, []).append([time.monotonic() if now is None else now, None])


def landed(url: str, now: float | None = None) -> None:
    """The oldest submission reserved on ``url`` was answered (a survey from now on sees it)."""
    with _LOCK:
        for entry in _IN_FLIGHT.get(url, []):
            if entry[1] is None:
                entry[1] = time.monotonic() if now is None else now
                return


def in_flight(url: str, survey_started: float) -> int:
    """This process's submissions to ``url`` a survey that began at ``survey_started`` cannot count."""
    with _LOCK:
        entries = [e for e in _IN_FLIGHT.get(url, []) if survey_started - (e[0] or 0.0) < IN_FLIGHT_TTL]
        _IN_FLIGHT[url] = entries
        return sum(1 for _chosen, answered in entries if answered is None or answered > survey_started)


def pick(
    states: Iterable[ServerState], extra_load: Mapping[str, int], rng: random.Random
) -> ServerState | None:
    """An eligible server at random, weighted ``1 / (1 + load)²`` (load: queue plus ``extra_load``)."""
    eligible = [s for s in states if s.eligible]
    if not eligible:
        return None
    weights = [1.0 / (1 + (s.queue_remaining or 0) + extra_load.get(s.url, 0)) ** 2 for s in eligible]
    return rng.choices(eligible, weights)[0]


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
        note_answer(url, None)
        remaining = queue_remaining(info)
        missing = tuple(sorted(required - _node_types(transport))) if required else ()
    except ComfyUIError as exc:
        note_answer(url, exc)
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
    """Ask every server of the pool not known dead for its load (and node types when ``required``),
    in parallel; all of them when every one is known dead."""
    now = time.monotonic()
    skipped = {url: dead_problem(url, now) for url in settings.servers}
    if all(skipped.values()):
        skipped = dict.fromkeys(settings.servers)
    ask = [url for url in settings.servers if not skipped[url]]
    with ThreadPoolExecutor(max_workers=min(len(ask), 16)) as pool:
        asked = dict(zip(ask, pool.map(lambda url: _survey_one(settings, url, required), ask), strict=True))
    return [asked.get(url) or ServerState(url, problem=skipped[url]) for url in settings.servers]


def choose(
    settings: ComfyUISettings, required: frozenset[str] = frozenset()
) -> tuple[str, list[ServerState]]:
    """The server to submit to, and the survey; raises when no server is eligible."""
    started = time.monotonic()
    states = survey(settings, required)
    chosen = pick(states, {url: in_flight(url, started) for url in settings.servers}, _RANDOM)
    if chosen is not None:
        reserve(chosen.url)
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
    now = time.monotonic()
    skipped = {c.base_url: dead_problem(c.base_url, now) for c in clients}
    if all(skipped.values()):
        skipped = {}  # every server is known dead: ask them all
    for client in clients:
        problem = skipped.get(client.base_url)
        if problem:
            log.warning("Skipping ComfyUI server %s: %s", client.base_url, problem)
            unreachable.append(f"{client.base_url} ({problem})")
            continue
        try:
            status = client.transport.run(flows.read_status(prompt_id, retry=False))
        except ComfyUIError as exc:
            note_answer(client.base_url, exc)
            log.warning("Could not look for prompt %s on %s: %s", prompt_id, client.base_url, exc)
            unreachable.append(f"{client.base_url} ({exc})")
            continue
        note_answer(client.base_url, None)
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

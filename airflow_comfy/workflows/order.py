"""The order in which the ComfyUI frontend lists the nodes of the prompt it sends.

ComfyUI runs output nodes in prompt order, so the converter lists nodes as the frontend does.
``graphToPrompt`` walks the root graph in ``LGraph.computeExecutionOrder`` order (Kahn's algorithm:
nodes without linked inputs in save order, then each node once all its linked inputs were reached,
following outputs and their links in order; nodes left over, e.g. in a loop, last, by id), putting
each subgraph or group node instance's inner nodes right after it (pre-order, in the order the
definition lists them). The prompt is a JavaScript object: keys that are array indices (plain node
ids, ``"12"``) come first in ascending order, the others (``"12:5"``) in insertion order.

Invariant: :func:`prompt_order` returns a permutation of the exec ids it is given.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from airflow_comfy.workflows.frontend import js_key_order
from airflow_comfy.workflows.graph import ExecNode, Scope


def execution_order(scope: Scope) -> list[str]:
    """LGraph.computeExecutionOrder(false) of one graph: its node ids (as strings) in order."""
    remaining: dict[str, int] = {}
    ready: deque[str] = deque()
    for node_id, node in scope.nodes.items():
        linked = 0
        for slot in node.get("inputs") or ():
            if type(slot) is dict and slot.get("link") is not None:
                linked += 1
        if linked:
            remaining[node_id] = linked
        else:
            ready.append(node_id)
    order: list[str] = []
    pending = dict.fromkeys(scope.nodes)
    visited: set[Any] = set()
    while ready:
        node_id = ready.popleft()
        order.append(node_id)
        pending.pop(node_id, None)
        for output in scope.nodes[node_id].get("outputs") or []:
            links = output.get("links") if isinstance(output, Mapping) else None
            for link_id in links or []:
                link = scope.links.get(link_id if type(link_id) is int else _int(link_id))
                if link is None or link.id in visited:
                    continue
                visited.add(link.id)
                target = str(link.target_id)
                if target not in scope.nodes or target not in remaining:
                    continue
                remaining[target] -= 1
                if remaining[target] == 0:
                    ready.append(target)
    return order + js_key_order(list(pending))


def prompt_order(ordered: list[ExecNode], root: Scope, exec_ids: list[str]) -> list[str]:
    """``exec_ids`` (the nodes emitted) in the order the frontend's prompt lists them."""
    children: dict[str, list[str]] = {}
    for entry in ordered:  # flatten() lists every instance's inner nodes right after it, pre-order
        children.setdefault(entry.exec_id.split(":", 1)[0], []).append(entry.exec_id)
    emitted = set(exec_ids)
    walk = [exec_id for root_id in execution_order(root) for exec_id in children.get(root_id, [])]
    listed = [exec_id for exec_id in walk if exec_id in emitted]
    seen = set(listed)
    listed += [exec_id for exec_id in exec_ids if exec_id not in seen]
    return js_key_order(listed)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None

"""Named gates a test opens, so that a stand-in run pauses at a chosen node until the test says go.

A ``StandInGate`` node blocks on the gate named by its ``gate`` input. The test waits until a node is
blocked there (:meth:`Gates.wait_blocked`), does what must happen at exactly that moment (interrupt,
restart, a second submission, ...), then opens the gate (:meth:`Gates.release`). This replaces
"sleep a little and hope the node is still running": the moment the test acts on is the same on an
idle and on an overloaded machine.

    with StandInServer(base_dir=tmp_path) as server:
        ...  # submit a workflow with {"class_type": "StandInGate", "inputs": {"image": [...], "gate": "g"}}
        server.gates.wait_blocked("g")
        requests.post(server.url + "/interrupt", timeout=10)
        server.gates.release("g")  # the gate node finishes; the interrupt acts at the next node

Invariants: every wait is bounded (a gate node that is never released fails its prompt with
TimeoutError after its ``timeout`` input; a server stop ends the wait at once); a released gate
stays open, for every later run too, until :meth:`Gates.close`. Gates belong to the server and
survive ``restart()``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

_STOP_POLL = 0.05  # how often a blocked node looks at the server's stop flag


class Gates:
    """The gates of one stand-in server; thread-safe (the node blocks in the worker thread)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._open: set[str] = set()
        self._blocked: dict[str, int] = {}

    def release(self, name: str = "gate") -> None:
        """Open ``name``: the node blocked there (and any later one) goes on."""
        with self._cond:
            self._open.add(name)
            self._cond.notify_all()

    def close(self, name: str = "gate") -> None:
        """Make ``name`` block again for the next node that reaches it."""
        with self._cond:
            self._open.discard(name)

    def blocked(self, name: str = "gate") -> int:
        """How many nodes are blocked on ``name`` right now."""
        with self._cond:
            return self._blocked.get(name, 0)

    def wait_blocked(self, name: str = "gate", timeout: float = 30.0) -> None:
        """Return once a node is blocked on ``name``; TimeoutError after ``timeout`` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._blocked.get(name, 0) > 0, timeout):
                raise TimeoutError(f"no stand-in node blocked on gate {name!r} within {timeout} s")

    def pass_through(self, name: str, timeout: float, stopping: Callable[[], bool]) -> bool:
        """Block the calling node until ``name`` is open (True) or ``stopping()`` (False).

        Raises TimeoutError when the gate stays closed for ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            self._blocked[name] = self._blocked.get(name, 0) + 1
            self._cond.notify_all()
            try:
                while name not in self._open:
                    if stopping():
                        return False
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"stand-in gate {name!r} was not released within {timeout} s")
                    self._cond.wait(min(remaining, _STOP_POLL))
                return True
            finally:
                self._blocked[name] -= 1
                self._cond.notify_all()

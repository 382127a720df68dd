"""Operator extra links: buttons on a task instance that open ComfyUI.

- :class:`ComfyUIWebLink` ("ComfyUI"): the web UI of the server the task used (XCom ``comfyui_url``,
  pushed before waiting, so the button works while the prompt runs and after a failure);
- :class:`ComfyUIOutputLink` ("ComfyUI output"): the ``/view`` URL of the first output file
  (``view_url`` of the first record of XCom ``outputs``, pushed on success).

How Airflow 3 uses them: when a task instance ends, the worker calls ``get_link`` and stores the
answer in the XCom ``_link_<class name>``; the API server then serves that stored value (the DAG
serializer keeps only each link's name and XCom key). So the links work after the run, from the
metadata database alone.

Invariants: a link is only ever read from XComs this package pushed, which are credential-free
(``protocol.urls`` redacts user info and never includes headers or tokens); a link whose XCom is
missing resolves to ``""`` (a disabled button), never to an error; the output link does not read
``outputs`` when the task instance cannot have pushed it (:func:`may_have_outputs`), so a run that
did not fail logs no ``XCom not found`` error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

__all__ = ["ComfyUIOutputLink", "ComfyUIWebLink", "first_view_url", "may_have_outputs"]


def _xcom_value(ti_key: TaskInstanceKey, key: str) -> Any:
    from airflow.sdk.execution_time.xcom import XCom

    return XCom.get_value(ti_key=ti_key, key=key)


def first_view_url(outputs: Any) -> str:
    """The ``view_url`` of the first record of an ``outputs`` XCom, or ``""``."""
    if isinstance(outputs, Sequence) and not isinstance(outputs, str) and outputs:
        first = outputs[0]
        if isinstance(first, Mapping) and isinstance(first.get("view_url"), str):
            return str(first["view_url"])
    return ""


class ComfyUIWebLink(BaseOperatorLink):
    """The ComfyUI web UI of the connection the task used."""

    name = "ComfyUI"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        value = _xcom_value(ti_key, "comfyui_url")
        return value if isinstance(value, str) else ""


class ComfyUIOutputLink(BaseOperatorLink):
    """The first output file of the task's prompt, served by ComfyUI's ``/view``."""

    name = "ComfyUI output"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        if not may_have_outputs(operator, ti_key):
            return ""
        return first_view_url(_xcom_value(ti_key, "outputs"))


def may_have_outputs(operator: Any, ti_key: Any) -> bool:
    """Whether the ``outputs`` XCom can exist when the link is computed; ``False`` means surely not.

    The worker computes the links each time the task instance stops: also when it defers,
    reschedules, fails or submits without waiting. ``outputs`` is pushed only by a success that
    waited, and reading a missing XCom makes Airflow log ``[error] XCom not found`` in a run that
    did not fail. In the worker ``ti_key`` is the running task instance, whose ``state`` is already
    the one it ends in; elsewhere (a plain key, no state) the XCom is read.
    """
    state = getattr(ti_key, "state", None)
    if state is not None and str(getattr(state, "value", state)) != "success":
        return False
    return getattr(operator, "wait_for_completion", True) is not False

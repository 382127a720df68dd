"""Template errors fail the task at once instead of burning its retries.

A Jinja ``UndefinedError`` (``'ts_nodash' is undefined`` in a run triggered without a logical date)
or ``TemplateSyntaxError`` while Airflow renders an operator's template fields comes out the same on
every retry, so :class:`FailFastTemplates` turns it into ``AirflowFailException`` with a message
naming the error and the usual cause. Mix it in first: ``class MyOperator(FailFastTemplates,
BaseOperator)``.

It hooks ``render_template``, the public method both paths go through: a plain task renders its
fields with ``render_template_fields``, an expanded (mapped) task with the unmapped operator's own
``render_template``; both run before ``execute`` inside the task runner's error handling, where an
``AirflowFailException`` marks the task failed without retrying.

Invariant: only template errors change type; the original exception stays chained (``__cause__``)
and any other exception passes through untouched.
"""

from __future__ import annotations

from typing import Any

import jinja2
from airflow.sdk.exceptions import AirflowFailException

# Context keys that exist only when a run has a logical date (Airflow 3 triggers have none by default).
LOGICAL_DATE_KEYS = frozenset(
    {"ds", "ds_nodash", "ts", "ts_nodash", "ts_nodash_with_tz", "logical_date", "data_interval_start"}
)
HINT = (
    "Runs triggered without a logical date (the Airflow 3 default for the REST API, the UI and "
    "`airflow dags trigger`) have no ds/ts/ts_nodash/logical_date; use {{ run_id }} or "
    "{{ dag_run.run_after }} instead."
)


def template_error_message(exc: jinja2.TemplateError) -> str:
    """What went wrong, plus the logical-date hint when the missing name is one of its keys."""
    text = str(exc) or type(exc).__name__
    missing = text.split("'")[1] if text.startswith("'") and text.count("'") >= 2 else ""
    hint = f" {HINT}" if missing in LOGICAL_DATE_KEYS else ""
    return f"Template error (a retry would render the same template, so the task fails now): {text}.{hint}"


class FailFastTemplates:
    """Mixin for operators and sensors: template errors raise ``AirflowFailException`` (no retries)."""

    def render_template(
        self,
        content: Any,
        context: Any,
        jinja_env: jinja2.Environment | None = None,
        seen_oids: set[int] | None = None,
    ) -> Any:
        try:
            return super().render_template(content, context, jinja_env, seen_oids)  # type: ignore[misc]
        except (jinja2.UndefinedError, jinja2.TemplateSyntaxError) as exc:
            raise AirflowFailException(template_error_message(exc)) from exc

"""Batches: one workflow over many items in one task, resumable, with a manifest.

- :mod:`~airflow_comfy.batch.items`: where items come from and what one asks for;
- :mod:`~airflow_comfy.batch.ledger`: the scheduling rules (no I/O);
- :mod:`~airflow_comfy.batch.manifest`: the manifest and the journal of submissions;
- :mod:`~airflow_comfy.batch.prepare`: per-server preparation, item prompt ids;
- :mod:`~airflow_comfy.batch.runner`: :class:`BatchRun`, which drives them against the servers.

The Airflow faces are :class:`~airflow_comfy.operators.batch.ComfyUIBatchOperator` and
:func:`~airflow_comfy.taskflow.run_batch`; downstream tasks read the manifest with
:func:`read_manifest`.
"""

from airflow_comfy.batch.manifest import read_manifest

__all__ = ["read_manifest"]

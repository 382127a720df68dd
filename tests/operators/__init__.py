"""Tests of airflow_comfy.operators (a package so that test module names may repeat across folders)."""

"""Tests of airflow_comfy.sensors (a package so that test module names may repeat across folders)."""

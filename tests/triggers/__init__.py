"""Tests of airflow_comfy.triggers (a package so that test module names may repeat across folders)."""

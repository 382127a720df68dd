"""Tests of the example DAGs in dags_examples/ (a package: test module names repeat across folders)."""

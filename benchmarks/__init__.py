"""Benchmarks; run each as ``python -m benchmarks.<name>`` from the repository root.

Every benchmark accepts ``--quick`` for a short run.
"""

"""Benchmark scripts (``python benchmarks/<name>.py``) and the modules behind ``benchmarks/run.py``."""

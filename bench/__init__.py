"""Benchmarks: scripts that run the product's own functions (``python -m bench.NAME``); shared pieces in
``bench.common``."""

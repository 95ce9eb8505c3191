"""The old name of ``bench.common``'s section writer (kept for scripts written against it)."""

from bench.common import BENCHMARKS, write_section

__all__ = ["BENCHMARKS", "write_section"]

"""Benchmarks: run on demand with `pytest -m perf tests/perf -s -n 0`; they print their figures.

Every module here sets `pytestmark = pytest.mark.perf`, so the default `-m "not perf"` skips it.
"""

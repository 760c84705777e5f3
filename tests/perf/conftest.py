"""Benchmarks: run on demand with `pytest -m perf tests/perf -s`; they print their figures."""

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/perf is a benchmark, so the default `-m "not perf"` leaves it out."""
    for item in items:
        item.add_marker(pytest.mark.perf)

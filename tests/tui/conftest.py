"""Cockpit tests read times in one fixed zone, so local-day figures never depend on the host."""

import pytest


@pytest.fixture(autouse=True)
def _cockpit_in_utc(utc_local_time: None) -> None:
    """Every cockpit test runs with local time = UTC (see `utc_local_time`)."""

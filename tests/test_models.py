"""Domain models validate at the edges with clear messages, and encode the two state fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from gpushop_tui.models import (
    Budget,
    CostEntry,
    InstanceState,
    OfferQuery,
    SessionStatus,
)
from tests.support.factories import make_offer, make_session

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


def test_offer_id_must_name_its_provider() -> None:
    offer = make_offer(NOW, id="vastai:998877", gpu_count=4, price_per_hour=2.0)
    assert offer.provider_offer_id == "998877"
    assert offer.price_per_gpu_hour == 0.5
    with pytest.raises(ValidationError, match="must look like 'vastai:<provider offer id>'"):
        make_offer(NOW, id="tensordock:abc")
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        make_offer(NOW, gpu_count=0)


def test_offer_times_must_be_timezone_aware() -> None:
    with pytest.raises(ValidationError, match="no timezone"):
        make_offer(datetime(2026, 5, 1))
    local = datetime(2026, 5, 1, 14, tzinfo=UTC).astimezone()
    assert make_offer(local).fetched_at.tzinfo == UTC


@pytest.mark.parametrize(
    ("status", "instance", "closed"),
    [
        (SessionStatus.ENDED, InstanceState.GONE, True),
        (SessionStatus.STOPPED, InstanceState.LIVE, False),
        (SessionStatus.FAILED, InstanceState.NONE, True),
        (SessionStatus.FAILED, InstanceState.LIVE, False),
        (SessionStatus.FAILED, InstanceState.UNKNOWN, False),
        (SessionStatus.ENDED, InstanceState.DESTROYING, False),
        (SessionStatus.RUNNING, InstanceState.GONE, False),
    ],
)
def test_closed_needs_terminal_status_and_no_instance(
    status: SessionStatus, instance: InstanceState, closed: bool
) -> None:
    assert make_session(NOW, status=status, instance=instance).closed is closed


def test_session_deadlines_and_names_are_checked() -> None:
    with pytest.raises(ValidationError, match="past hard_max_at without an override"):
        make_session(NOW, expires_at=NOW + timedelta(hours=13))
    overridden = make_session(
        NOW, expires_at=NOW + timedelta(hours=13), hard_max_override="long training run"
    )
    assert overridden.hard_max_override == "long training run"
    with pytest.raises(ValidationError, match="letters, digits"):
        make_session(NOW, consumer="bad consumer!")


def test_cost_accrues_per_second() -> None:
    entry = CostEntry(
        session_id="s1",
        consumer="alice",
        provider="vastai",
        gpu_name="RTX 4090",
        rate_per_hour=0.36,
        started_at=NOW,
    )
    assert entry.amount(NOW + timedelta(seconds=100)) == pytest.approx(0.01)
    assert entry.amount(NOW - timedelta(seconds=5)) == 0
    ended = entry.model_copy(update={"ended_at": NOW + timedelta(minutes=10)})
    assert ended.amount(NOW + timedelta(days=3)) == pytest.approx(0.06)


def test_query_and_budget_bounds() -> None:
    with pytest.raises(ValidationError, match="min_gpus 4 is above max_gpus 2"):
        OfferQuery(min_gpus=4, max_gpus=2)
    with pytest.raises(ValidationError, match="greater than 0"):
        Budget(kind="monthly_spend", limit=0)
    with pytest.raises(ValidationError, match="'warn', 'block' or 'stop'"):
        Budget(kind="burn_rate", limit=5, action="explode")

"""Extends, granted and refused, are audit events: the session timeline and Events show them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gpushop_tui.core.sessions import SessionConflict
from gpushop_tui.errors import UserError
from gpushop_tui.models import AuditEvent, Severity
from tests.core.market import Market, open_market


@pytest.fixture
async def market(monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> AsyncIterator[Market]:
    async with open_market(monkeypatch, isolated_env, providers=("vastai",)) as opened:
        yield opened


def extends(events: list[AuditEvent]) -> list[AuditEvent]:
    return [e for e in events if e.kind == "session_extended"]


async def test_a_granted_extend_is_audited_with_its_new_end(market: Market) -> None:
    running = await market.running(hours=6)
    longer = await market.shopper.extend(running.id, 2)
    [event] = extends(await market.shopper.audit_log(running.id))
    assert event.message == f"extended by 2 h to {longer.expires_at:%H:%M} UTC"
    assert event.severity == Severity.INFO
    assert event.data["granted"] is True and event.data["hours"] == 2


async def test_an_extend_past_the_hard_max_without_a_reason_is_audited_as_refused(
    market: Market,
) -> None:
    running = await market.running(hours=6)
    with pytest.raises(UserError, match="past its hard max"):
        await market.shopper.extend(running.id, 7)
    [event] = extends(await market.shopper.audit_log(running.id))
    assert event.message.startswith("extend by 7 h refused: ")
    assert "past its hard max" in event.message and "override reason" in event.message
    assert event.severity == Severity.WARNING and event.data["granted"] is False
    unchanged = await market.shopper.session(running.id)
    assert unchanged.expires_at == running.expires_at


async def test_an_override_is_audited_as_granted_with_its_reason(market: Market) -> None:
    running = await market.running(hours=6)
    moved = await market.shopper.extend(running.id, 7, override_reason="long eval run")
    [event] = extends(await market.shopper.audit_log(running.id))
    assert event.data["granted"] is True
    assert f"to {moved.expires_at:%H:%M} UTC" in event.message
    assert "long eval run" in event.message


async def test_extending_a_closed_session_is_audited_as_refused(market: Market) -> None:
    running = await market.running()
    await market.shopper.done(running.id)
    await market.until(running.id, lambda s: s.closed)
    with pytest.raises(SessionConflict):
        await market.shopper.extend(running.id, 1)
    [event] = extends(await market.shopper.audit_log(running.id))
    assert event.message.startswith("extend by 1 h refused: ")
    assert "only an active one can be extended" in event.message

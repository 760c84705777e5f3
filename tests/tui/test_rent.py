"""Renting from the inventory: the dialog, its explicit confirm, the budgets it shows, and what
happens when the core refuses. Against the simulator on a fake clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from textual.widgets import Button, Input, Select, Static, TabbedContent

from gpushop_tui.models import (
    Budget,
    BudgetAction,
    BudgetKind,
    IdleAction,
    OfferQuery,
    ProvisionRequest,
    Session,
    StoragePolicy,
)
from gpushop_tui.tui.rent import RentScreen
from tests.tui.harness import Cockpit, cannot_stop, cockpit


async def open_dialog(ride: Cockpit, query: str = "") -> RentScreen:
    """Filter the offer list, then `enter` on its first offer."""
    await ride.offer_list()
    if query:
        await ride.press("slash", *query, "enter")
    await ride.press("enter")
    screen = ride.app.screen
    assert isinstance(screen, RentScreen)
    return screen


def shown(screen: RentScreen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


def no_instances(ride: Cockpit) -> bool:
    return all(not ride.market.live_instances(p) for p in ("vastai", "tensordock", "bluelobster"))


async def test_rent_an_offer_with_an_explicit_confirm(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        offer = (await ride.offer_list()).cursor_offer()
        assert offer is not None
        dialog = await open_dialog(ride)
        assert dialog.offer == offer
        assert offer.id in shown(dialog, "#rent-offer")
        await ride.press(*"alice", "enter")  # enter moves on to the hours; it never rents
        assert ride.app.screen is dialog and await ride.shopper.sessions() == []
        assert ride.app.focused is dialog.query_one("#rent-hours", Input)
        await ride.press("ctrl+a", "ctrl+k", "3")
        total = shown(dialog, "#rent-total")
        assert f"At most ${offer.price_per_hour * 3:.2f} for 3 h" in total
        assert "No budget counts against alice" in shown(dialog, "#rent-budgets")
        await ride.press("ctrl+r")
        assert not isinstance(ride.app.screen, RentScreen)
        sessions = await ride.shopper.sessions()
        assert len(sessions) == 1
        session = sessions[0]
        assert (session.offer_id, session.consumer, session.reservation_hours) == (
            offer.id,
            "alice",
            3,
        )
        assert ride.app.query_one("#panes", TabbedContent).active == "sessions"
        assert f"Renting 1x {offer.gpu_name} on {offer.provider} as session {session.id}." in (
            ride.toasts()
        )
        await ride.press("1")  # back to the inventory
        again = await open_dialog(ride)
        assert again.query_one("#rent-consumer", Input).value == "alice"  # remembered
        await ride.press("escape")
        assert not isinstance(ride.app.screen, RentScreen)
        assert len(await ride.shopper.sessions()) == 1


async def test_a_blocking_budget_says_refused_and_nothing_is_rented(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        await ride.shopper.set_budget(
            Budget(kind=BudgetKind.MONTHLY_SPEND, limit=0.01, action=BudgetAction.BLOCK)
        )
        dialog = await open_dialog(ride)
        await ride.press(*"alice")
        budgets = shown(dialog, "#rent-budgets")
        assert "REFUSED — the global monthly spend budget ($0.01/month, block)" in budgets
        assert "this rental would bring it to $" in budgets
        assert dialog.query_one("#rent-confirm", Button).disabled
        await ride.press("ctrl+r")
        assert ride.app.screen is dialog  # refused here, before anything is rented
        assert "Refused by the global monthly spend budget" in ride.toasts()[-1]
        await ride.press("escape")
        assert await ride.shopper.sessions() == []
        assert no_instances(ride)


async def test_a_refusal_from_the_core_keeps_the_dialog_open_with_the_reason(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        offer = (await ride.offer_list()).cursor_offer()
        assert offer is not None
        ride.market.world.credit = offer.price_per_hour / 2  # the balance is read on confirm
        dialog = await open_dialog(ride)
        await ride.press(*"alice", "enter", "ctrl+a", "ctrl+k", "2")
        await ride.press("ctrl+r")
        assert ride.app.screen is dialog  # still open, fields as they were
        assert dialog.value("consumer") == "alice" and dialog.value("hours") == "2"
        assert shown(dialog, "#rent-problem").startswith("Nothing was rented: the vastai balance")
        assert not any(t.startswith("Nothing was rented") for t in ride.toasts())
        assert not dialog.query_one("#rent-confirm", Button).disabled
        assert await ride.shopper.sessions() == []
        assert no_instances(ride)
        assert ride.app.query_one("#panes", TabbedContent).active == "inventory"
        ride.market.world.credit = 1000.0  # topped up: the same dialog rents
        await ride.press("ctrl+r")
        assert not isinstance(ride.app.screen, RentScreen)
        [session] = await ride.shopper.sessions()
        assert (session.consumer, session.reservation_hours) == ("alice", 2)


async def test_a_refusal_after_the_dialog_was_closed_is_a_toast(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        offer = (await ride.offer_list()).cursor_offer()
        assert offer is not None
        ride.market.world.credit = offer.price_per_hour / 2
        answer = asyncio.Event()
        provision = ride.shopper.provision

        async def slow_provision(request: ProvisionRequest) -> Session:
            await answer.wait()
            return await provision(request)

        monkeypatch.setattr(ride.shopper, "provision", slow_provision)
        dialog = await open_dialog(ride)
        await ride.press(*"alice")
        await ride.pilot.press("ctrl+r")
        assert dialog.renting and "Renting…" in shown(dialog, "#rent-problem")
        await ride.pilot.press("escape")  # closed before the answer came
        assert dialog not in ride.app.screen_stack
        answer.set()
        await ride.settle()
        assert any(t.startswith("Nothing was rented: the vastai balance") for t in ride.toasts())
        assert await ride.shopper.sessions() == []


async def test_keeping_the_disk_is_offered_only_where_the_provider_can_stop(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cannot_stop(monkeypatch, "tensordock")
    async with cockpit(monkeypatch, isolated_env) as ride:
        tensordock = await open_dialog(ride, "provider=tensordock")
        assert tensordock.query_one("#rent-storage", Select).disabled
        assert tensordock.query_one("#rent-idle-action", Select).disabled
        assert "tensordock cannot stop an instance and keep its disk, so 'done' and an idle " in (
            shown(tensordock, "#rent-notes")
        )
        await ride.press("escape")
        await ride.press("slash", "ctrl+u", *"provider=vastai", "enter")
        vastai = await open_dialog(ride)
        storage = vastai.query_one("#rent-storage", Select)
        assert not storage.disabled
        storage.value = StoragePolicy.KEEP
        idle = vastai.query_one("#rent-idle-action", Select)
        assert not idle.disabled and idle.value == IdleAction.DESTROY
        idle.value = IdleAction.STOP
        await ride.press(*"bob")
        await ride.press("ctrl+r")
        [session] = await ride.shopper.sessions()
        assert session.storage_policy == StoragePolicy.KEEP
        assert session.idle_action == IdleAction.STOP
        cheapest = (await ride.shopper.offers(OfferQuery(providers=("vastai",)))).offers
        assert session.offer_id in {o.id for o in cheapest}


async def test_bad_fields_say_what_to_fix_and_do_not_rent(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        dialog = await open_dialog(ride)
        assert "Fill in the consumer" in shown(dialog, "#rent-problem")
        await ride.press("ctrl+r")
        assert ride.app.screen is dialog
        await ride.press(*"alice", "tab", "ctrl+a", "ctrl+k", *"13")
        assert "Hours: Input should be less than or equal to 12" in shown(dialog, "#rent-problem")
        assert dialog.query_one("#rent-confirm", Button).disabled
        await ride.press("ctrl+r")
        assert ride.app.screen is dialog
        assert await ride.shopper.sessions() == []


async def test_the_dialog_rents_a_model_server_and_shows_only_the_fields_its_kind_uses(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        dialog = await open_dialog(ride)
        model = dialog.query_one("#rent-model", Input)
        command = dialog.query_one("#rent-command", Input)
        assert not model.display and not command.display  # interactive: SSH only
        await ride.press(*"alice")
        dialog.query_one("#rent-workload", Select).value = "llm"
        await ride.settle()
        assert model.display and not command.display
        await ride.press("ctrl+r")
        assert ride.app.screen is dialog
        assert shown(dialog, "#rent-problem") == "Model: the llm workload needs a model"
        model.value = "llama3.1:8b"
        await ride.settle()
        await ride.press("ctrl+r")
        assert not isinstance(ride.app.screen, RentScreen)
        [session] = await ride.shopper.sessions()
        assert session.workload_spec is not None
        assert (session.workload, session.workload_spec.model) == ("llm", "llama3.1:8b")
        for _ in range(60):
            session = await ride.shopper.session(session.id)
            if session.status == "running":
                break
            await ride.advance(2)
        assert session.status == "running" and session.endpoint == "http://127.0.0.1:11434/v1"


async def test_an_env_word_without_a_value_is_refused_in_the_dialog_as_on_the_cli(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        dialog = await open_dialog(ride)
        await ride.press(*"alice")
        dialog.query_one("#rent-workload", Select).value = "custom"
        await ride.settle()
        dialog.query_one("#rent-command", Input).value = "python3 -m http.server 8080"
        dialog.query_one("#rent-env", Input).value = "A=1 FOO"
        await ride.settle()
        await ride.press("ctrl+r")
        assert ride.app.screen is dialog
        assert shown(dialog, "#rent-problem") == "Env: 'FOO' is not NAME=VALUE"
        assert await ride.shopper.sessions() == []

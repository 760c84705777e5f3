"""Invariant 8: a planted credential never reaches the database file or the log file."""

from __future__ import annotations

import logging

import pytest

from gpushop_tui.config import load_settings
from gpushop_tui.core.events import Alert
from gpushop_tui.core.shopper import Shopper
from gpushop_tui.logs import configure_logging
from gpushop_tui.models import SessionStatus
from gpushop_tui.secrets import SecretStore
from tests.support.factories import make_session

PLANTED_ENV = "vk-planted-env-6f1d2c9a7b"
PLANTED_KEYRING = "td-planted-keyring-0c3e5a"


async def test_planted_credentials_never_reach_db_or_logs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("VASTAI_API_KEY", PLANTED_ENV)
    SecretStore().set("tensordock", PLANTED_KEYRING)
    settings = load_settings()
    settings.paths.prepare()
    handler = configure_logging(settings)
    caplog.handler.addFilter(handler.filters[0])
    try:
        async with await Shopper.open(settings) as shopper:
            assert shopper._secrets.get("vastai") == PLANTED_ENV
            assert shopper._secrets.get("tensordock") == PLANTED_KEYRING
            session = make_session(shopper.clock.now(), shopper.install_id)
            await shopper._store.insert_session(session)
            await shopper._store.update_session(
                session.id,
                {},
                status=SessionStatus.FAILED,
                state_entered_at=shopper.clock.now(),
                error=f"401 Unauthorized for Bearer {PLANTED_ENV}",
            )
            await shopper._events.publish(
                Alert(
                    alert="destroy_failing",
                    message=f"destroy failed: GET ?api_key={PLANTED_ENV} said no",
                    session_id=session.id,
                )
            )
            await shopper._events.publish(
                Alert(alert="provider_error", message=f"tensordock rejected {PLANTED_KEYRING}")
            )
            logging.getLogger("gpushop.providers").error(
                "request failed: headers=%s", {"Authorization": f"Bearer {PLANTED_ENV}"}
            )
            stored = await shopper._store.get_session(session.id)
            assert stored is not None and stored.error == "401 Unauthorized for Bearer ***"
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()

    paths = settings.paths
    db_bytes = b"".join(p.read_bytes() for p in paths.data_dir.glob("gpushop.db*") if p.is_file())
    log_text = paths.log_file.read_text()
    assert "destroy failed" in log_text  # the log was written...
    assert b"destroy failed" in db_bytes  # ...and so was the database
    for planted in (PLANTED_ENV, PLANTED_KEYRING):
        assert planted.encode() not in db_bytes
        assert planted not in log_text
        assert planted not in caplog.text

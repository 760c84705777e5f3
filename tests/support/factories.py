"""Small builders of valid domain objects for tests."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from gpushop_tui.models import Offer, Session


def make_offer(fetched_at: datetime, **overrides: Any) -> Offer:
    fields: dict[str, Any] = {
        "id": "vastai:123456",
        "provider": "vastai",
        "gpu_name": "RTX 4090",
        "gpu_count": 1,
        "vram_gb": 24,
        "price_per_hour": 0.42,
        "region": "Texas, US",
        "country": "US",
        "reliability": 0.99,
        "cuda": 12.4,
        "fetched_at": fetched_at,
    }
    fields.update(overrides)
    return Offer(**fields)


def make_session(now: datetime, install_id: str = "abcd1234", **overrides: Any) -> Session:
    session_id = overrides.pop("id", secrets.token_hex(6))
    offer = overrides.pop("offer", make_offer(now))
    fields: dict[str, Any] = {
        "id": session_id,
        "consumer": "alice",
        "provider": offer.provider,
        "offer_id": offer.id,
        "offer": offer,
        "label": f"gpushop-{install_id}-{session_id}",
        "reservation_hours": 2,
        "expires_at": now + timedelta(hours=2),
        "hard_max_at": now + timedelta(hours=12),
        "created_at": now,
        "state_entered_at": now,
    }
    fields.update(overrides)
    return Session(**fields)

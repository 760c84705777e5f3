"""API bearer tokens: one for the operator, and optional ones scoped to a single consumer.

Kept in `api_tokens.json` in the data dir, written `0600` (never in the database, never logged).
Created on first serve; `gpushop serve-token` shows them. Comparison is constant-time.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from gpushop_tui.errors import UserError

TOKENS_FILE = "api_tokens.json"


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the operator (`consumer` None) or one consumer only."""

    consumer: str | None

    def may_see(self, consumer: str) -> bool:
        return self.consumer is None or self.consumer == consumer


class TokenBook:
    """The tokens the API accepts, read from and written to one `0600` file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._admin: str | None = None
        self._scoped: dict[str, str] = {}

    @classmethod
    def open(cls, data_dir: Path) -> TokenBook:
        """Read the tokens, creating the operator's on first use."""
        book = cls(data_dir / TOKENS_FILE)
        book._load()
        if book._admin is None:
            book._admin = new_token()
            book._save()
        return book

    @property
    def admin(self) -> str:
        assert self._admin is not None
        return self._admin

    def for_consumer(self, consumer: str) -> str:
        """The token limited to `consumer`, made on first ask."""
        if consumer not in self._scoped:
            self._scoped[consumer] = new_token()
            self._save()
        return self._scoped[consumer]

    def principal(self, presented: str) -> Principal | None:
        """Who `presented` is, or None; every stored token is compared, in constant time."""
        found: Principal | None = None
        if hmac.compare_digest(presented.encode(), self.admin.encode()):
            found = Principal(None)
        for consumer, token in self._scoped.items():
            if hmac.compare_digest(presented.encode(), token.encode()):
                found = Principal(consumer)
        return found

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as err:
            raise UserError(f"cannot read the API tokens in {self.path}: {err}") from None
        self._admin = data.get("admin")
        self._scoped = dict(data.get("consumers", {}))

    def _save(self) -> None:
        text = json.dumps({"admin": self._admin, "consumers": self._scoped}, indent=2)
        partial = self.path.with_suffix(".tmp")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(partial, 0o600)
        os.replace(partial, self.path)


def new_token() -> str:
    return "gps_" + secrets.token_urlsafe(32)

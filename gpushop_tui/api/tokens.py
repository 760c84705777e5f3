"""API bearer tokens: one for the operator, and optional ones scoped to a single consumer.

Kept in `api_tokens.json` in the data dir, written `0600` (never in the database, never logged).
Created on first serve; `gpushop serve-token` shows them. Comparison is constant-time. The file
is the truth: a token made or revoked by another process (while `--serve` runs) counts at the
next request, because each check re-reads the file once it changed (one `stat` per request).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from gpushop_tui.errors import UserError

log = logging.getLogger(__name__)

TOKENS_FILE = "api_tokens.json"

FileSignature = tuple[int, int, int]
"""A file's inode, size and mtime (ns): when any differs, the file was rewritten."""


def _signature(status: os.stat_result) -> FileSignature:
    return status.st_ino, status.st_size, status.st_mtime_ns


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
        self._seen: FileSignature | None = None
        """The file as it was when last read or written here."""

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
        self._refresh()
        if consumer not in self._scoped:
            self._scoped[consumer] = new_token()
            self._save()
        return self._scoped[consumer]

    def revoke(self, consumer: str) -> bool:
        """Remove `consumer`'s token; False when it had none."""
        self._refresh()
        if self._scoped.pop(consumer, None) is None:
            return False
        self._save()
        return True

    def principal(self, presented: str) -> Principal | None:
        """Who `presented` is, or None; every stored token is compared, in constant time."""
        self._refresh()
        found: Principal | None = None
        if hmac.compare_digest(presented.encode(), self.admin.encode()):
            found = Principal(None)
        for consumer, token in self._scoped.items():
            if hmac.compare_digest(presented.encode(), token.encode()):
                found = Principal(consumer)
        return found

    def _refresh(self) -> None:
        """Re-read the file if it changed since it was last read or written here. An unreadable
        one keeps the tokens read before (and says so in the log) rather than fail requests."""
        try:
            current = _signature(self.path.stat())
        except FileNotFoundError:
            return
        if current == self._seen:
            return
        try:
            self._load()
        except UserError as err:
            self._seen = current
            log.warning("%s; keeping the tokens read before", err.message)

    def _load(self) -> None:
        try:
            with self.path.open(encoding="utf-8") as handle:
                seen = _signature(os.fstat(handle.fileno()))
                data = json.loads(handle.read())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as err:
            raise UserError(f"cannot read the API tokens in {self.path}: {err}") from None
        self._admin = data.get("admin")
        self._scoped = dict(data.get("consumers", {}))
        self._seen = seen

    def _save(self) -> None:
        text = json.dumps({"admin": self._admin, "consumers": self._scoped}, indent=2)
        partial = self.path.with_suffix(".tmp")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(partial, 0o600)
        os.replace(partial, self.path)
        self._seen = _signature(self.path.stat())


def new_token() -> str:
    return "gps_" + secrets.token_urlsafe(32)

"""Persistence: the database that is the source of truth for every process (SQLite by
default, PostgreSQL for a team server)."""

from gpushop_tui.store.db import DuplicateSession, Lease, Store

__all__ = ["DuplicateSession", "Lease", "Store"]

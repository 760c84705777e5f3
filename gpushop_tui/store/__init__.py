"""Persistence: the SQLite database that is the source of truth for every process."""

from gpushop_tui.store.db import DuplicateSession, Lease, Store

__all__ = ["DuplicateSession", "Lease", "Store"]

"""What the cockpit remembers between runs: a small JSON file beside the user's data.

The file holds preferences only (never state the core owns). Loading is tolerant: a missing,
unreadable or malformed file gives the defaults, so a bad file never keeps the cockpit from
starting. Saving writes a private temporary file and renames it over the old one, so a crash
mid-write leaves the previous preferences intact.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, ValidationError

from gpushop_tui.config import Settings

PREFS_FILE = "tui.json"


class Prefs(BaseModel):
    """The cockpit's remembered choices; a field missing from the file takes its default."""

    theme: str | None = None
    """The Textual theme last chosen (None: Textual's default)."""
    inventory_filter: str | None = None
    """The Inventory filter's last text (None: the pane's own default)."""


def prefs_file(settings: Settings) -> Path:
    """Where `settings`' installation keeps the cockpit's preferences (its data dir, so the
    demo's throw-away home keeps them out of the user's own)."""
    return settings.paths.data_dir / PREFS_FILE


def load_prefs(path: Path) -> Prefs:
    """The preferences in `path`, or the defaults when it is missing or cannot be read."""
    try:
        return Prefs.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return Prefs()


def save_prefs(path: Path, prefs: Prefs) -> None:
    """Write `prefs` to `path` atomically, readable by the user only (0600)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(prefs.model_dump_json(indent=2))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise

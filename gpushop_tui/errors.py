"""Errors a user can cause, each carrying one clear sentence.

The faces turn a `UserError` into one line on stderr (CLI, exit 2), a toast (TUI) or a JSON
error body (API); anything else is a bug and is logged with its traceback, never shown raw.
"""


class UserError(Exception):
    """Something the user can fix: a bad flag, bad setting, unreadable data dir, missing key."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(UserError):
    """A setting (env var or config file entry) has a value we cannot use."""


class DataDirError(UserError):
    """The data directory cannot be created, read or written."""

"""Errors a user can cause, each carrying one clear sentence that names no face.

The core says what is wrong in neutral words (`message`), which input it concerns (`field`, the
`ProvisionRequest`-style name such as `hours` or `override_reason`) and, where there is a way
out, a machine-readable `hint` (such as `needs_override`). Each face phrases that its own way:
the CLI names its flag, the API its body field, the TUI its key or dialog field. A `UserError`
becomes one line on stderr (CLI, exit 2), a toast (TUI) or a JSON error body (API); anything
else is a bug and is logged with its traceback, never shown raw.
"""


class UserError(Exception):
    """Something the user can fix: a bad input, bad setting, unreadable data dir, missing key."""

    exit_code = 2

    def __init__(self, message: str, *, field: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.hint = hint


class ConfigError(UserError):
    """A setting (env var or config file entry) has a value we cannot use."""


class DataDirError(UserError):
    """The data directory cannot be created, read or written."""


class DatabaseUnavailable(DataDirError):
    """The database server stopped answering (PostgreSQL down, or the network to it)."""


class Hint:
    """The machine-readable ways out a core error may offer; faces phrase each one."""

    NEEDS_OVERRIDE = "needs_override"
    """Past the hard max: give an override reason."""
    STORAGE_NOT_KEEPABLE = "storage_not_keepable"
    """The provider cannot stop and keep a disk: choose storage destroy."""
    CANNOT_STOP = "cannot_stop"
    """The provider cannot stop an instance and keep its disk: destroy it, or end it."""
    NOT_CONFIGURED = "not_configured"
    """The provider has no credential: set one."""
    UNKNOWN_SESSION = "unknown_session"
    """No such session: list the sessions."""
    UNKNOWN_OFFER = "unknown_offer"
    """No such offer (or it is taken): look at the menu again."""
    UNKNOWN_BUDGET = "unknown_budget"
    """No such budget: list the budgets."""

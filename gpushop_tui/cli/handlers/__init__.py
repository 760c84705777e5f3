"""What the commands do, one module per family; each is imported only when its command runs.

Here: opening the core for one command, which the families' handlers share: the local one, or
the remote one when `--remote URL` (or GPUSHOP_REMOTE) names a `gpushop --serve`.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from gpushop_tui.config import load_settings
from gpushop_tui.errors import UserError
from gpushop_tui.logs import configure_logging

if TYPE_CHECKING:
    from gpushop_tui.config import Settings
    from gpushop_tui.core import Facade

T = TypeVar("T")


@dataclass
class RemoteFlags:
    """`--remote URL` and `--token T` as given on the command line (None: not given)."""

    url: str | None = None
    token: str | None = None


REMOTE = RemoteFlags()
"""Set once by the entry point before a command runs; read by `with_shopper`."""
NO_REMOTE = "--token goes with --remote URL (or GPUSHOP_REMOTE)"


def command_settings() -> Settings:
    """The settings a command runs with: `--remote URL` overrides GPUSHOP_REMOTE (and is
    checked as it is)."""
    if REMOTE.url is None:
        return load_settings()
    return load_settings({**os.environ, "GPUSHOP_REMOTE": REMOTE.url})


async def open_facade(settings: Settings) -> Facade:
    """The façade a command or the cockpit works on: over the server `settings.remote` names
    (with the token from `--token`, GPUSHOP_REMOTE_TOKEN, the keyring or the token file), else
    over the local database."""
    # Imported here, not above: `paths`, `config` and `keys` never need the façade.
    from gpushop_tui.core import RemoteShopper, Shopper, remote_token

    if settings.remote is not None:
        return await RemoteShopper.open(settings, remote_token(settings, REMOTE.token))
    if REMOTE.token is not None:
        raise UserError(NO_REMOTE)
    return await Shopper.open(settings)


async def with_shopper(action: Callable[[Facade], Awaitable[T]]) -> T:
    """Open the core for one command, run `action` on it, close it again."""
    settings = command_settings()
    settings.paths.prepare()
    configure_logging(settings)
    shopper = await open_facade(settings)
    try:
        return await action(shopper)
    finally:
        await shopper.aclose()


NO_PROVIDER = UserError(
    "no provider is configured; set VASTAI_API_KEY, TENSORDOCK_API_TOKEN or BLUELOBSTER_API_KEY, "
    "or run 'gpushop keys set PROVIDER'"
)
"""What a command that needs a provider says when none has a credential."""


def require_provider(shopper: Facade) -> None:
    """Refuse with `NO_PROVIDER` unless some provider has a credential."""
    if not shopper.configured_providers():
        raise NO_PROVIDER

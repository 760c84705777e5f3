"""What the commands do, one module per family; each is imported only when its command runs.

Here: opening the core for one command, which the families' handlers share.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from gpushop_tui.config import load_settings
from gpushop_tui.errors import UserError
from gpushop_tui.logs import configure_logging

if TYPE_CHECKING:
    from gpushop_tui.core import Shopper

T = TypeVar("T")


async def with_shopper(action: Callable[[Shopper], Awaitable[T]]) -> T:
    """Open the core for one command, run `action` on it, close it again."""
    # Imported here, not above: `paths`, `config` and `keys` never need the façade.
    from gpushop_tui.core import Shopper

    settings = load_settings()
    settings.paths.prepare()
    configure_logging(settings)
    async with await Shopper.open(settings) as shopper:
        return await action(shopper)


NO_PROVIDER = UserError(
    "no provider is configured; set VASTAI_API_KEY, TENSORDOCK_API_TOKEN or BLUELOBSTER_API_KEY, "
    "or run 'gpushop keys set PROVIDER'"
)
"""What a command that needs a provider says when none has a credential."""


def require_provider(shopper: Shopper) -> None:
    """Refuse with `NO_PROVIDER` unless some provider has a credential."""
    if not shopper.configured_providers():
        raise NO_PROVIDER

"""The provider's own time limit on an instance (RunPod's terminate-after): a kill path that
holds when no gpushop process is left and no node watchdog can run (a container cannot power
its host off).

The create sets it (`provider_ttl`), and the session records the limit the provider then
reports on the instance (`observed`, `provider_ttl_at`): what holds, not what was asked for.
It then follows the session: the hard max while the instance may run (plus the keep-stop grace
for a session meant to keep its disk, so that its stop at the hard max wins the race and the
disk survives), and the end of the keep time once stopped with its disk kept. A move that
fails is alerted once per reason and left to the supervisor to retry; until then the limit it
still holds is what the session says.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from gpushop_tui.core.rows import Decision, SessionRows
from gpushop_tui.models import Session, SessionStatus, Severity
from gpushop_tui.providers.base import Provider, ProviderError

KEEP_STOP_GRACE = timedelta(minutes=10)
"""How long past its hard max a stop that keeps the disk may still try before the instance is
destroyed instead: the hard max bounds running time, and a stop that cannot be confirmed may
still be running. The provider's own limit waits for it too, so the disk is not lost to it."""


def running_limit(session: Session) -> datetime:
    """The provider's limit while the instance may run: the hard max, plus the keep-stop grace
    for a session meant to keep its disk (its stop at the hard max must win the race), in
    whole seconds (as providers keep it)."""
    grace = KEEP_STOP_GRACE if session.meant_to_keep_disk else timedelta(0)
    return (session.hard_max_at + grace).replace(microsecond=0)


def provider_ttl(adapter: Provider, session: Session) -> datetime | None:
    """The time limit a create sets at the provider, where the provider can end an instance
    by itself (`Capabilities.provider_ttl`); None elsewhere."""
    return running_limit(session) if adapter.INFO.capabilities.provider_ttl else None


class ProviderTtls:
    """Keeps each session's provider time limit where the session's deadlines say."""

    def __init__(self, *, rows: SessionRows, providers: Mapping[str, Provider | None]) -> None:
        self.rows = rows
        self.providers = providers
        self._failed: dict[str, str] = {}
        """Per session, the reason of the last failed move (alerted once per reason)."""

    @staticmethod
    def wanted(session: Session) -> datetime | None:
        """Where the session's provider time limit belongs now; None when it has none, is
        closed, or is stopped with no keep time yet (one is given to it by the supervisor)."""
        if session.provider_ttl_at is None or session.closed or session.instance.absent:
            return None
        if session.status == SessionStatus.STOPPED:
            return None if session.keep_until is None else session.keep_until.replace(microsecond=0)
        return running_limit(session)

    def out_of_date(self, session: Session) -> bool:
        """Whether the limit at the provider is not where `wanted` puts it."""
        wanted = self.wanted(session)
        return wanted is not None and wanted != session.provider_ttl_at

    async def observed(self, session: Session, reported: datetime | None) -> Session:
        """Record the time limit the provider reports on the session's instance, which is
        what holds (a create, an adoption, a move from its console). A provider that can keep
        one but reports none is alerted once: the limit asked for at create did not take."""
        name = self._name(session)
        if reported is None:
            why = f"{name} reports no time limit of its own on instance {session.instance_id}"
            await self._alert_once(
                session,
                why,
                "provider_ttl_missing",
                f"session {session.id}: {why}; only a gpushop supervisor or cron reconcile "
                "ends it now",
            )
        if reported == session.provider_ttl_at:
            return session
        message = (
            f"{name} itself ends the instance at {reported:%Y-%m-%d %H:%M} UTC"
            if reported is not None
            else f"{name} holds no time limit on the instance"
        )
        return await self._record(
            session,
            reported,
            message,
            lambda s: (
                ({"provider_ttl_at": reported}, message) if s.provider_ttl_at != reported else None
            ),
        )

    def _name(self, session: Session) -> str:
        adapter = self.providers.get(session.provider)
        return adapter.INFO.display_name if adapter is not None else session.provider

    async def sync(self, session: Session) -> Session:
        """Move the session's limit at the provider to where it belongs, if it is not there."""
        wanted = self.wanted(session)
        adapter = self.providers.get(session.provider)
        if (
            wanted is None
            or wanted == session.provider_ttl_at
            or adapter is None
            or session.instance_id is None
        ):
            return session
        name = self._name(session)
        try:
            await adapter.move_ttl(session.instance_id, wanted)
        except ProviderError as err:
            why = f"{name}'s own time limit was not moved to {wanted:%Y-%m-%d %H:%M} UTC"
            await self._alert_once(
                session,
                err.message,
                "provider_ttl_not_moved",
                f"session {session.id}: {why} ({err.message}); it still ends the instance "
                f"at {session.provider_ttl_at:%Y-%m-%d %H:%M} UTC; retrying",
            )
            return session
        self._failed.pop(session.id, None)
        message = f"{name}'s own time limit moved to {wanted:%Y-%m-%d %H:%M} UTC"
        return await self._record(
            session,
            wanted,
            message,
            lambda s: ({"provider_ttl_at": wanted}, message) if s.provider_ttl_at else None,
        )

    async def _alert_once(self, session: Session, reason: str, alert: str, message: str) -> None:
        """Alert `message` unless the last alert for this session had the same `reason`."""
        if self._failed.get(session.id) == reason:
            return
        self._failed[session.id] = reason
        await self.rows.alert(session.id, alert, message, Severity.ERROR)

    async def _record(
        self,
        session: Session,
        limit: datetime | None,
        message: str,
        decide: Callable[[Session], Decision],
    ) -> Session:
        """Store the limit as `decide` says, and say it in the session's timeline."""
        updated = await self.rows.change(session.id, decide)
        if updated is None or updated.provider_ttl_at != limit:
            return updated or session
        await self.rows.progress(updated, message)
        return updated

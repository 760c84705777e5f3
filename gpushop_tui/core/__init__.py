"""The core: business rules behind the one façade every face calls, `Shopper`.

Faces import this package and nothing below it: the façade, the views it answers with, the
events it publishes and the errors it raises are all named here (DESIGN.md §1). A face that
imports a `gpushop_tui.core.*` submodule, an edge module, or reaches a private attribute of
`Shopper` fails `tests/test_layering.py`.

Importing this package is cheap: each name loads its module on first use (PEP 562), so a
one-shot command that needs only the credential store does not pay for the whole core.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpushop_tui.core.benchmarks import GpuSummary as GpuSummary
    from gpushop_tui.core.benchmarks import Ranked as Ranked
    from gpushop_tui.core.benchmarks import RankOrder as RankOrder
    from gpushop_tui.core.benchmarks import UnknownModel as UnknownModel
    from gpushop_tui.core.budgets import THRESHOLDS as THRESHOLDS
    from gpushop_tui.core.budgets import BudgetCheck as BudgetCheck
    from gpushop_tui.core.budgets import BudgetRefused as BudgetRefused
    from gpushop_tui.core.budgets import Usage as Usage
    from gpushop_tui.core.budgets import describe_budget as describe_budget
    from gpushop_tui.core.budgets import limit_text as limit_text
    from gpushop_tui.core.budgets import used_text as used_text
    from gpushop_tui.core.compare import GpuRow as GpuRow
    from gpushop_tui.core.compare import InventoryComparison as InventoryComparison
    from gpushop_tui.core.compare import ProviderBest as ProviderBest
    from gpushop_tui.core.costs import Billing as Billing
    from gpushop_tui.core.costs import CostLine as CostLine
    from gpushop_tui.core.costs import CostReport as CostReport
    from gpushop_tui.core.costs import CostRow as CostRow
    from gpushop_tui.core.costs import Grouping as Grouping
    from gpushop_tui.core.events import EVENTS_LOST as EVENTS_LOST
    from gpushop_tui.core.events import Alert as Alert
    from gpushop_tui.core.events import Event as Event
    from gpushop_tui.core.events import InventoryRefreshed as InventoryRefreshed
    from gpushop_tui.core.events import SessionChanged as SessionChanged
    from gpushop_tui.core.events import Subscription as Subscription
    from gpushop_tui.core.events import WebhookFailed as WebhookFailed
    from gpushop_tui.core.facade import REMOTE_CALLS as REMOTE_CALLS
    from gpushop_tui.core.facade import Facade as Facade
    from gpushop_tui.core.facade import Snapshot as Snapshot
    from gpushop_tui.core.facade import call_types as call_types
    from gpushop_tui.core.inventory import InventoryView as InventoryView
    from gpushop_tui.core.inventory import ProviderHealth as ProviderHealth
    from gpushop_tui.core.inventory import ProviderReport as ProviderReport
    from gpushop_tui.core.provisioning import Rental as Rental
    from gpushop_tui.core.remote import RemoteShopper as RemoteShopper
    from gpushop_tui.core.remote import RemoteUnavailable as RemoteUnavailable
    from gpushop_tui.core.remote import remote_token as remote_token
    from gpushop_tui.core.sessions import ACTIVE as ACTIVE
    from gpushop_tui.core.sessions import NotConfigured as NotConfigured
    from gpushop_tui.core.sessions import SessionConflict as SessionConflict
    from gpushop_tui.core.sessions import SessionNotFound as SessionNotFound
    from gpushop_tui.core.sessions import SessionPower as SessionPower
    from gpushop_tui.core.sessions import SessionProgress as SessionProgress
    from gpushop_tui.core.sessions import StaleOffer as StaleOffer
    from gpushop_tui.core.shopper import OrphanRow as OrphanRow
    from gpushop_tui.core.shopper import ProviderCheck as ProviderCheck
    from gpushop_tui.core.shopper import Shopper as Shopper
    from gpushop_tui.core.supervisor import PassReport as PassReport
    from gpushop_tui.core.views import EXPIRY_WARNING as EXPIRY_WARNING
    from gpushop_tui.core.views import HARD_MAX_WARNING as HARD_MAX_WARNING
    from gpushop_tui.core.views import Deadline as Deadline
    from gpushop_tui.core.views import Endpoint as Endpoint
    from gpushop_tui.core.views import NodeReading as NodeReading
    from gpushop_tui.core.views import PowerStretch as PowerStretch
    from gpushop_tui.core.views import SessionView as SessionView
    from gpushop_tui.core.views import Tunnel as Tunnel
    from gpushop_tui.node.probes import NodeSample as NodeSample
    from gpushop_tui.providers.base import Capabilities as Capabilities
    from gpushop_tui.providers.base import ProviderError as ProviderError
    from gpushop_tui.providers.base import ProviderInfo as ProviderInfo
    from gpushop_tui.providers.base import RateLimited as RateLimited
    from gpushop_tui.query import QueryError as QueryError
    from gpushop_tui.secrets import CREDENTIAL_ENV as CREDENTIAL_ENV
    from gpushop_tui.secrets import CredentialStatus as CredentialStatus
    from gpushop_tui.secrets import RedactingFilter as RedactingFilter
    from gpushop_tui.secrets import SecretStore as SecretStore
    from gpushop_tui.secrets import redact as redact
    from gpushop_tui.store import Lease as Lease

_EXPORTS: dict[str, tuple[str, str]] = {
    "CREDENTIAL_ENV": ("secrets", "CREDENTIAL_ENV"),
    "ACTIVE": ("core.sessions", "ACTIVE"),
    "Alert": ("core.events", "Alert"),
    "Billing": ("core.costs", "Billing"),
    "BudgetCheck": ("core.budgets", "BudgetCheck"),
    "BudgetRefused": ("core.budgets", "BudgetRefused"),
    "CostLine": ("core.costs", "CostLine"),
    "CostReport": ("core.costs", "CostReport"),
    "CostRow": ("core.costs", "CostRow"),
    "CredentialStatus": ("secrets", "CredentialStatus"),
    "Capabilities": ("providers.base", "Capabilities"),
    "Deadline": ("core.views", "Deadline"),
    "EXPIRY_WARNING": ("core.views", "EXPIRY_WARNING"),
    "Endpoint": ("core.views", "Endpoint"),
    "Event": ("core.events", "Event"),
    "EVENTS_LOST": ("core.events", "EVENTS_LOST"),
    "Facade": ("core.facade", "Facade"),
    "GpuRow": ("core.compare", "GpuRow"),
    "GpuSummary": ("core.benchmarks", "GpuSummary"),
    "Grouping": ("core.costs", "Grouping"),
    "HARD_MAX_WARNING": ("core.views", "HARD_MAX_WARNING"),
    "InventoryComparison": ("core.compare", "InventoryComparison"),
    "InventoryRefreshed": ("core.events", "InventoryRefreshed"),
    "InventoryView": ("core.inventory", "InventoryView"),
    "Lease": ("store", "Lease"),
    "NodeReading": ("core.views", "NodeReading"),
    "NodeSample": ("node.probes", "NodeSample"),
    "NotConfigured": ("core.sessions", "NotConfigured"),
    "OrphanRow": ("core.shopper", "OrphanRow"),
    "PassReport": ("core.supervisor", "PassReport"),
    "PowerStretch": ("core.views", "PowerStretch"),
    "ProviderBest": ("core.compare", "ProviderBest"),
    "ProviderCheck": ("core.shopper", "ProviderCheck"),
    "ProviderError": ("providers.base", "ProviderError"),
    "ProviderHealth": ("core.inventory", "ProviderHealth"),
    "ProviderInfo": ("providers.base", "ProviderInfo"),
    "ProviderReport": ("core.inventory", "ProviderReport"),
    "QueryError": ("query", "QueryError"),
    "RankOrder": ("core.benchmarks", "RankOrder"),
    "Ranked": ("core.benchmarks", "Ranked"),
    "RateLimited": ("providers.base", "RateLimited"),
    "REMOTE_CALLS": ("core.facade", "REMOTE_CALLS"),
    "RedactingFilter": ("secrets", "RedactingFilter"),
    "RemoteShopper": ("core.remote", "RemoteShopper"),
    "RemoteUnavailable": ("core.remote", "RemoteUnavailable"),
    "Rental": ("core.provisioning", "Rental"),
    "SecretStore": ("secrets", "SecretStore"),
    "SessionChanged": ("core.events", "SessionChanged"),
    "SessionConflict": ("core.sessions", "SessionConflict"),
    "SessionNotFound": ("core.sessions", "SessionNotFound"),
    "SessionPower": ("core.sessions", "SessionPower"),
    "SessionProgress": ("core.sessions", "SessionProgress"),
    "SessionView": ("core.views", "SessionView"),
    "Shopper": ("core.shopper", "Shopper"),
    "StaleOffer": ("core.sessions", "StaleOffer"),
    "Snapshot": ("core.facade", "Snapshot"),
    "Subscription": ("core.events", "Subscription"),
    "THRESHOLDS": ("core.budgets", "THRESHOLDS"),
    "Tunnel": ("core.views", "Tunnel"),
    "UnknownModel": ("core.benchmarks", "UnknownModel"),
    "Usage": ("core.budgets", "Usage"),
    "WebhookFailed": ("core.events", "WebhookFailed"),
    "call_types": ("core.facade", "call_types"),
    "describe_budget": ("core.budgets", "describe_budget"),
    "limit_text": ("core.budgets", "limit_text"),
    "redact": ("secrets", "redact"),
    "remote_token": ("core.remote", "remote_token"),
    "used_text": ("core.budgets", "used_text"),
}
"""Each exported name: the module (under `gpushop_tui`) that defines it, and its name there."""

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"gpushop_tui.{module}"), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

"""Migration dashboard served by the proxy's admin server (see docs/dashboard.md).

Ports for the data it shows but does not own (parity, CDC lag, playbook steps) live in
`strangler_proxy.dashboard.ports`; `bootstrap(config, parity=..., cdc=..., playbook=...)`
injects real providers.
"""

from strangler_proxy.dashboard.ports import (
    CdcProvider,
    DiffItem,
    EndpointParity,
    Mismatch,
    ParityProvider,
    PlaybookProvider,
    PlaybookStep,
    TableLag,
)
from strangler_proxy.dashboard.state import Dashboard

__all__ = [
    "CdcProvider",
    "Dashboard",
    "DiffItem",
    "EndpointParity",
    "Mismatch",
    "ParityProvider",
    "PlaybookProvider",
    "PlaybookStep",
    "TableLag",
]

"""The member record the clients return from ``get_nodes()``.

A dataclass (``dataclasses.asdict`` gives its JSON form), in a module of its own so that the
blocking client imports ``dataclasses`` only when a member list is actually read.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._target import format_endpoint


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One cluster member as a node sees it: ``role`` is ``'voter'`` or ``'learner'``."""

    node_id: int
    address: str
    port: int
    role: str
    is_leader: bool

    @property
    def endpoint(self) -> str:
        """``"address:port"`` (IPv6 addresses in brackets)."""
        return format_endpoint(self.address, self.port)

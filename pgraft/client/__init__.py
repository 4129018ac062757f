"""The pgraft clients: ``await pgraft.connect(...)`` (asyncio) and ``pgraft.Client`` (blocking).

Both speak the client side of ``docs/protocol.md`` to one node, over TCP (``"host:port"``) or
the node's Unix socket (``<data-dir>/node.sock``, or the data directory itself), through one
sans-I/O protocol (:mod:`pgraft.client._proto`)::

    async with await pgraft.connect("127.0.0.1:7001") as c:   # pgraft.client.aio
        await c.add_node(4, "127.0.0.1", 7004)

    with pgraft.Client("/var/lib/pgraft/node.sock") as c:     # pgraft.client.sync
        print(c.get_nodes())

Arguments are checked before anything is sent (:class:`~pgraft.errors.InvalidArgument`); errors
raised by the node are rebuilt with :func:`pgraft.errors.from_wire`, so a write on a follower
raises :class:`~pgraft.errors.NotLeaderError` with ``leader_id``/``leader_address``.

The asyncio client, the blocking client and :class:`NodeInfo` are imported on first use, so that
``import pgraft.client.sync`` (what the SQL functions run) never imports asyncio.
"""

from __future__ import annotations

from ..protocol import MAX_FRAME_SIZE
from ._target import DEFAULT_TIMEOUT, Target, format_endpoint, parse_target

TYPE_CHECKING = False  # typing only for the type checker: see pgraft/errors.py
if TYPE_CHECKING:
    from typing import Any

    from ._nodeinfo import NodeInfo
    from .aio import AsyncClient, connect
    from .sync import Client

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_FRAME_SIZE",
    "AsyncClient",
    "Client",
    "NodeInfo",
    "Target",
    "connect",
    "format_endpoint",
    "parse_target",
]

_LAZY = {"AsyncClient": "aio", "connect": "aio", "Client": "sync", "NodeInfo": "_nodeinfo"}


def __getattr__(name: str) -> Any:
    if name == "Node":
        import warnings

        warnings.warn("pgraft.client.Node is deprecated: use pgraft.client.NodeInfo (the name "
                      "Node is the node runtime's, pgraft.node.Node)", DeprecationWarning,
                      stacklevel=2)
        name = "NodeInfo"
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # __import__, not importlib.import_module: see pgraft/__init__.py.
    value = getattr(__import__(f"{__name__}.{module}", fromlist=[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

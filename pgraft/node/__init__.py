"""The node runtime: one pgraft node in this process (docs/design.md, "Layers").

``pgraft serve`` is :func:`add_serve_arguments` + :func:`config_from_args` + :func:`run`.
"""

from .node import (
    Node,
    NodeConfig,
    add_serve_arguments,
    config_from_args,
    format_cluster,
    parse_cluster,
    parse_endpoint,
    run,
)

__all__ = ["Node", "NodeConfig", "add_serve_arguments", "config_from_args", "format_cluster",
           "parse_cluster", "parse_endpoint", "run"]

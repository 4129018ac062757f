"""The ``pgraft`` command line (see :mod:`pgraft.cli.main`)."""

from .main import EXIT_CONNECTION, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, main
from .tables import format_table, nodes_table

__all__ = ["EXIT_CONNECTION", "EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_USAGE", "format_table",
           "main", "nodes_table"]

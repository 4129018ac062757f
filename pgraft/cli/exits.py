"""Exit codes of the ``pgraft`` command (scripts depend on them)."""

EXIT_OK = 0
EXIT_FAILURE = 1  # the node or cluster refused or failed the call
EXIT_USAGE = 2  # bad command line or argument
EXIT_CONNECTION = 3  # the node cannot be reached
EXIT_INTERRUPTED = 130

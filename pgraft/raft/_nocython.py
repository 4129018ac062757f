"""Stand-in for Cython's pure-Python ``cython`` module where Cython is not installed (a wheel run
with ``PGRAFT_PUREPYTHON=1``): the core's sources only ask whether they are compiled."""

compiled = False

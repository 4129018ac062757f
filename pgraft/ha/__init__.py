"""HA mode: pgraft runs the PostgreSQL server itself (``pgraft serve --postgres PGDATA``).

- :mod:`.types`      the observations and records shared by the modules below;
- :mod:`.lease`      the clock assumption and the lease arithmetic derived from it;
- :mod:`.records`    the HA commands carried by the Raft log and the state they build;
- :mod:`.policy`     the sans-I/O decisions: renew, fence, fail over, rejoin (no I/O, no clock);
- :mod:`.pgctl`      PostgreSQL control: initdb, configuration, start/stop/promote, basebackup,
                     rewind, and what the server says about itself;
- :mod:`.controller` the loop that feeds the policy observations and carries out its actions;
- :mod:`.http`       the HTTP endpoints for load balancers (Patroni's semantics) and /metrics.

The HA state lives only in the Raft log (docs/design.md rule 9).
"""

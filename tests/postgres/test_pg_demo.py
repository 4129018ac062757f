"""`make demo` on PostgreSQL: pgraft.pg.demo runs the seed and cleans up after itself."""

from __future__ import annotations

import os

import pytest

from pgraft.pg import demo as pg_demo
from tests.support.postgres import processes_under


def test_pg_demo_runs_the_seed_and_cleans_up(pgraft_installed: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    before = set(os.listdir("/tmp"))
    assert pg_demo.main(["--no-install"]) == 0
    out = capsys.readouterr().out
    for n in (1, 2, 3, 4):
        assert f"node{n}$ SELECT * FROM pgraft_get_nodes();" in out
    assert out.count("(4 rows)") == 4  # node 4 listed by every server
    assert "SELECT pgraft_add_node(4, '127.0.0.1', " in out
    assert "ERROR:  cannot add node: this node (" in out and ") is not the leader" in out
    assert "HINT:  The leader is node " in out and "(SQLSTATE 25006)" in out
    created = [d for d in set(os.listdir("/tmp")) - before if d.startswith("pgraft-demo-")]
    assert created == [], f"demo left {created} behind"
    assert not processes_under("/tmp/pgraft-demo-")

"""The Raft core's tests once more on the other implementation (compiled <-> pure).

The core is one set of ``.py`` sources, compiled with the typed layout of the ``.pxd`` files
beside them; ``PGRAFT_PUREPYTHON=1`` runs the sources. Both must pass the same tests: the
interaction scripts, the malformed-message checks and (fewer seeds of) the simulation.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import pgraft

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NESTED = "PGRAFT_OTHER_IMPLEMENTATION_RUN"


@pytest.mark.skipif(os.environ.get(NESTED) == "1", reason="this is the other implementation's run")
@pytest.mark.skipif(os.environ.get("PGRAFT_SIM_SEED") is not None, reason="replaying one seed")
def test_raft_tests_pass_on_the_other_implementation() -> None:
    env = {**os.environ, NESTED: "1", "PGRAFT_SIM_RUNS": "100"}
    if pgraft.IMPLEMENTATION == "compiled":
        env["PGRAFT_PUREPYTHON"] = "1"
        other = "pure"
    else:
        env.pop("PGRAFT_PUREPYTHON", None)
        other = "compiled"
    probe = subprocess.run(
        [sys.executable, "-c", "import pgraft, pgraft.raft.core as c; "
         "print(pgraft.IMPLEMENTATION, c.__file__.endswith('.py'))"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=60)
    assert probe.stdout.split() == [other, str(other == "pure")], probe.stdout
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/raft/test_interaction.py", "tests/raft/test_bad_messages.py",
         "tests/raft/test_simulation.py", "tests/raft/test_commit_quorum.py",
         "tests/raft/test_propose_many.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    passed = re.search(r"(\d+) passed", run.stdout)
    assert passed and int(passed.group(1)) >= 10, run.stdout[-2000:]

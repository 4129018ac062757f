"""The blocking client is what a PostgreSQL backend imports for its first pgraft call: it must
not pull in asyncio, uvloop, TLS, the durable log or anything else a plain call does not use.

Each check runs in a fresh interpreter started like PL/Python's (``-S``: no site-packages
processing, so nothing but the interpreter's own start-up modules is loaded beforehand; the
paths of pgraft and msgpack are given), under ``-X importtime``, with the compiled and the pure
core.
"""

from __future__ import annotations

import os
import subprocess
import sys

import msgpack
import pytest
from fake_node import FakeNode

import pgraft

REPO = os.path.dirname(os.path.dirname(os.path.abspath(pgraft.__file__)))
SITE = os.path.dirname(os.path.dirname(os.path.abspath(msgpack.__file__)))
#: Never on the path of a plain call over the Unix socket (no TLS, no secret, no member list).
#: typing and socket.py too: each alone cost more than the rest of the client (the modules
#: import typing for the type checker only; the Unix socket is opened with _socket).
#: importlib and warnings (importlib imports it) are not loaded in a backend either. json and
#: ipaddress (checked addresses only) stay out too, and ctypes: the SQL functions' interrupt
#: callable imports it, and an answered call never calls it.
HEAVY = ("asyncio", "uvloop", "ssl", "dataclasses", "inspect", "logging", "hashlib", "typing",
         "socket", "selectors", "enum", "re", "importlib", "warnings", "json", "ipaddress",
         "ctypes", "pgraft._log", "pgraft._log_py", "pgraft.auth", "pgraft.client.aio",
         "pgraft.node")
#: Not even imported until used: select (a kept connection's catch-up, TCP), errno (TCP).
NOT_ON_IMPORT = ("select", "errno")


def heavy(pure: bool) -> set[str]:
    # The pure twin of the codec (a fallback) imports typing (and with it re, warnings) itself.
    return set(HEAVY) - {"typing", "re", "enum", "warnings"} if pure else set(HEAVY)


def imported_by(code: str, pure: bool) -> tuple[set[str], set[str]]:
    """Modules in sys.modules after ``code``, and those ``-X importtime`` reported."""
    script = f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join((REPO, SITE)),
               PGRAFT_PUREPYTHON="1" if pure else "0")
    out = subprocess.run([sys.executable, "-S", "-X", "importtime", "-c", script], env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    timed = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines()
             if line.startswith("import time:")}
    return set(out.stdout.split()), timed


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure"])
def test_importing_the_sync_client_imports_no_event_loop(pure: bool) -> None:
    loaded, timed = imported_by("import pgraft.client.sync", pure)
    assert "pgraft.client.sync" in loaded and "pgraft.client._proto" in loaded
    assert "asyncio" not in timed and "uvloop" not in timed
    assert not loaded & heavy(pure), sorted(loaded & heavy(pure))
    assert not loaded & set(NOT_ON_IMPORT), sorted(loaded & set(NOT_ON_IMPORT))


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure"])
def test_a_call_as_the_sql_functions_make_it_stays_light(fake: FakeNode, pure: bool) -> None:
    # What the SQL functions' _pgraft_call() runs (postgres/pgraft--1.0--1.1.sql): import
    # the bridge, one Bridge, calls through it; its interrupt callable imports ctypes when
    # called, which a quickly answered call never does.
    code = (
        "from pgraft import __version__\n"
        "from pgraft.pg import bridge as module\n"
        f"b = module.Bridge({fake.unix_path!r}, refused=module.version_problem(\n"
        "    module.major_minor(__version__), module.major_minor(__version__), __version__))\n"
        "assert b.call('x', 'get_term', None, None, 10000) == {'ok': True, 'result': 3}\n"
        "assert b.call('x', 'kv_put', ['k', 'v'], None, 10000)['result'] is True\n"
        "b.close()\n")
    loaded, timed = imported_by(code, pure)
    assert "asyncio" not in timed and "uvloop" not in timed
    assert not loaded & heavy(pure), sorted(loaded & heavy(pure))


def test_importing_pgraft_alone_loads_only_the_errors() -> None:
    loaded, _ = imported_by("import pgraft", pure=False)
    assert "pgraft.errors" in loaded
    assert not {m for m in loaded if m.startswith("pgraft.") and m != "pgraft.errors"}
    assert "asyncio" not in loaded

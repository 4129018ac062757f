"""pgraft.failpoints: the PGRAFT_FAILPOINTS syntax, its errors, counting, and that each point
fires where it should, identically in both twins of the log."""

from __future__ import annotations

import errno
import importlib
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from pgraft.errors import InvalidArgument, StorageError


def entry_cls(log: ModuleType) -> type:
    name = "pgraft._core_py" if log.__name__.endswith("_py") else "pgraft._core"
    return importlib.import_module(name).Entry


def test_parse_accepted_syntax(failpoints: ModuleType) -> None:
    got = failpoints.parse(" log.sync=delay:50ms , hardstate.save=eio@3,log.msync=enospc,"
                           "log.segment_create=pass,snapshot.write=delay:1.5s")
    assert set(got) == {"log.sync", "hardstate.save", "log.msync", "log.segment_create",
                        "snapshot.write"}
    assert (got["log.sync"].action, got["log.sync"].delay) == ("delay", 0.05)
    assert (got["hardstate.save"].action, got["hardstate.save"].start) == ("eio", 3)
    assert got["log.msync"].action == "enospc" and got["log.segment_create"].action == "pass"
    assert got["snapshot.write"].delay == 1.5
    assert failpoints.parse("log.sync=delay:20us")["log.sync"].delay == pytest.approx(20e-6)
    assert failpoints.parse("") == {} and failpoints.parse(" , ") == {}


@pytest.mark.parametrize("spec,why", [
    ("log.sync", "expected <point>=<action>"),
    ("log.sync=", "expected <point>=<action>"),
    ("=eio", "expected <point>=<action>"),
    ("log.synk=eio", "unknown point 'log.synk'"),
    ("log.sync=eieio", "unknown action 'eieio'"),
    ("log.sync=delay:5min", "unknown action 'delay:5min'"),
    ("log.sync=delay", "unknown action 'delay'"),
    ("log.sync=eio@0", "@0"),
    ("log.sync=eio@x", "@x"),
    ("log.sync=eio,log.sync=pass", "given twice"),
])
def test_bad_syntax_names_the_item_and_the_syntax(failpoints: ModuleType, spec: str,
                                                  why: str) -> None:
    with pytest.raises(InvalidArgument) as ei:
        failpoints.configure("hardstate.save=pass," + spec)
    msg = str(ei.value)
    assert "PGRAFT_FAILPOINTS" in msg and why in msg
    bad_item = spec.split(",")[-1].strip()
    assert repr(bad_item) in msg
    assert "<point>=<action>[@<n>]" in ei.value.hint and "log.segment_create" in ei.value.hint
    assert failpoints.ACTIVE is None  # the previous configuration (none) stays in force


def test_environment_variable_is_parsed_at_import() -> None:
    import pgraft

    root = Path(pgraft.__file__).parent.parent  # the same pgraft as this process
    code = ("import pgraft.failpoints as f; "
            "print(sorted(f.ACTIVE), f.ACTIVE['log.sync'].action, f.ACTIVE['log.sync'].start)")
    env = dict(os.environ, PGRAFT_FAILPOINTS="log.sync=eio@2, hardstate.save=delay:1ms")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=root)
    assert out.stdout.split("\n")[0] == "['hardstate.save', 'log.sync'] eio 2"
    env["PGRAFT_FAILPOINTS"] = "log.sync=eio,bogus=1"
    bad = subprocess.run([sys.executable, "-c", "from pgraft._impl import log"], env=env,
                         capture_output=True, text=True, cwd=root)
    assert bad.returncode != 0
    assert "PGRAFT_FAILPOINTS: bad item 'bogus=1': unknown point 'bogus'" in bad.stderr
    env.pop("PGRAFT_FAILPOINTS")
    off = subprocess.run([sys.executable, "-c", "import pgraft.failpoints as f; "
                          "print(f.ACTIVE)"], env=env, capture_output=True, text=True,
                         check=True, cwd=root)
    assert off.stdout.strip() == "None"


def test_counting_and_start_at_the_nth_call(failpoints: ModuleType) -> None:
    failpoints.configure("log.sync=eio@3")
    failpoints.hit("log.sync", "/x")
    failpoints.hit("log.sync", "/x")
    failpoints.hit("log.msync", "/x")  # not configured: only counted
    with pytest.raises(OSError) as ei:
        failpoints.hit("log.sync", "/x/y.seg")
    assert ei.value.errno == errno.EIO and ei.value.filename == "/x/y.seg"
    assert "failpoint log.sync" in str(ei.value)
    with pytest.raises(OSError):
        failpoints.hit("log.sync", "/x")  # and every later call
    assert failpoints.hits("log.sync") == 4 and failpoints.hits("log.msync") == 1
    with pytest.raises(InvalidArgument):
        failpoints.hits("nope")
    failpoints.configure("log.msync=enospc")
    assert failpoints.hits("log.sync") == 0
    with pytest.raises(OSError) as ei:
        failpoints.hit("log.msync", "/x")
    assert ei.value.errno == errno.ENOSPC
    failpoints.configure(None)
    assert failpoints.ACTIVE is None
    failpoints.hit("log.msync", "/x")  # inert
    assert failpoints.hits("log.msync") == 0


def test_each_log_point_fires_in_both_twins(log: ModuleType, failpoints: ModuleType,
                                            tmp_path: Path) -> None:
    E = entry_cls(log)
    failpoints.configure("log.sync=pass,log.msync=pass,log.segment_create=pass,"
                         "hardstate.save=pass")
    with log.Log(tmp_path / "l", segment_size=1024) as lg:
        assert failpoints.hits("log.segment_create") == 1  # the first segment
        lg.append([E(i, 1, 0, b"x" * 100) for i in range(1, 30)])  # rolls over
        assert failpoints.hits("log.segment_create") > 1
        rolls = failpoints.hits("log.sync")
        lg.sync()
        assert failpoints.hits("log.sync") == rolls + 1
        assert failpoints.hits("log.msync") >= 1
    with log.HardStateFile(tmp_path / "hs") as hs:
        hs.save(log.HardState(1, 2, 3))
        hs.save(log.HardState(1, 2, 4))
    assert failpoints.hits("hardstate.save") == 2


def test_delay_delays_the_real_call(log: ModuleType, failpoints: ModuleType,
                                    tmp_path: Path) -> None:
    E = entry_cls(log)
    with log.Log(tmp_path / "l") as lg, log.HardStateFile(tmp_path / "hs") as hs:
        lg.append([E(1, 1, 0, b"a")])
        failpoints.configure("log.sync=delay:150ms,hardstate.save=delay:100ms")
        t0 = time.monotonic()
        lg.sync()
        t1 = time.monotonic()
        hs.save(log.HardState(1, 0, 1))
        t2 = time.monotonic()
        assert t1 - t0 >= 0.15 and t2 - t1 >= 0.1
        assert lg.synced_index == 1 and lg.failed is None  # the real calls were made
    with log.HardStateFile(tmp_path / "hs") as hs:
        assert hs.load() == log.HardState(1, 0, 1)


def test_eio_surfaces_as_a_storage_error_naming_the_file(log: ModuleType,
                                                         failpoints: ModuleType,
                                                         tmp_path: Path) -> None:
    E = entry_cls(log)
    with log.Log(tmp_path / "l") as lg:
        lg.append([E(1, 1, 0, b"a")])
        failpoints.configure("log.msync=eio")
        with pytest.raises(StorageError) as ei:
            lg.sync()
    seg = str(tmp_path / "l" / log.segment_name(1))
    assert seg in str(ei.value) and "Input/output error" in str(ei.value)
    assert ei.value.details["path"] == seg and ei.value.details["errno"] == "EIO"

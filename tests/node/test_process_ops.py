"""What the PostgreSQL launcher relies on, on real ``pgraft serve`` processes (the contract
between the launcher, the node and the SQL bridge): ``--log-format launcher`` on stderr,
``--pg-system-id`` (recorded, refused, rebound with ``pgraft storage rebind-postgres``) and
SIGQUIT (exit 2 at once, also when the launcher execs the node with SIGQUIT ignored)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO

import pytest

from pgraft.localcluster import free_port, wait_until
from pgraft.node.logformat import unescape
from tests.support.cluster import requires_node

pytestmark = [requires_node]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECORD = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL):(.*)$")
HUMAN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) \S+: ")
SYSID = 7234567890123456789


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO] + ([env["PYTHONPATH"]]
                                                  if env.get("PYTHONPATH") else []))
    env.pop("PGRAFT_FAILPOINTS", None)
    env.update(extra)
    return env


def _pgraft(*args: str, timeout: float = 30.0, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgraft", *args], capture_output=True,
                          text=True, timeout=timeout, env=_env(**env), cwd=REPO,
                          stdin=subprocess.DEVNULL)


def _serve_args(data_dir: str, port: int, *extra: str) -> list[str]:
    return ["serve", "--id", "1", "--address", "127.0.0.1", "--port", str(port),
            "--data-dir", data_dir, "--initial-cluster", f"1=127.0.0.1:{port}",
            "--election-timeout", "300", "--heartbeat-interval", "30", *extra]


class Served:
    """One ``pgraft serve`` process, its stderr in a file."""

    def __init__(self, proc: subprocess.Popen[bytes], err_path: str) -> None:
        self.proc = proc
        self.err_path = err_path

    def stderr(self) -> str:
        with open(self.err_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_listening(self, timeout: float = 30.0) -> None:
        def listening() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the node exited with {self.proc.returncode}:\n"
                                     f"{self.stderr()}")
            return "listening on" in self.stderr()
        wait_until("the node to listen", listening, timeout, 0.05)

    def wait(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)


@pytest.fixture
def serve(tmpdir_short: str) -> Iterator[Callable[..., Served]]:
    """``serve(args, ignore_sigquit=False, **env)``: start ``pgraft serve`` (killed at
    teardown); with ``ignore_sigquit`` as the launcher does, SIGQUIT ignored (SIG_IGN)."""
    started: list[Served] = []

    def start(args: list[str], *, ignore_sigquit: bool = False, **env: str) -> Served:
        err_path = os.path.join(tmpdir_short, f"serve{len(started)}.err")
        out: IO[bytes]
        with open(err_path, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pgraft", *args], stdin=subprocess.DEVNULL,
                stdout=out, stderr=out, env=_env(**env), cwd=REPO,
                # what the launcher does: exec the node with SIGQUIT ignored
                preexec_fn=(lambda: signal.signal(signal.SIGQUIT, signal.SIG_IGN))
                if ignore_sigquit else None)
        s = Served(proc, err_path)
        started.append(s)
        return s

    try:
        yield start
    finally:
        for s in started:
            if s.proc.poll() is None:
                os.kill(s.proc.pid, signal.SIGKILL)
                s.proc.wait(10)


def _records(text: str) -> list[tuple[str, str]]:
    """The launcher's reading of the node's output: every line one record."""
    out = []
    for line in text.split("\n")[:-1]:
        m = RECORD.match(line)
        assert m, f"a line that is not a record: {line!r}"
        out.append((m.group(1), unescape(m.group(2))))
    assert text.endswith("\n")
    return out


# ------------------------------------------------------------------ --log-format launcher
def test_launcher_log_format(tmpdir_short: str) -> None:
    # a data directory whose name holds a backslash and a newline, and a storage failure after
    # the start: a record with a traceback
    data_dir = os.path.join(tmpdir_short, "a\\b\nc")
    port = free_port()
    res = _pgraft(*_serve_args(data_dir, port, "--log-format", "launcher"),
                  PGRAFT_FAILPOINTS="log.sync=eio@3")  # @1: the start (process.py)
    assert res.returncode == 1, res.stderr
    assert res.stdout == ""
    records = _records(res.stderr)
    by_text = {text: level for level, text in records}
    listening = [t for t in by_text if t.startswith("pgraft.node: node 1 listening on ")]
    assert len(listening) == 1 and f"(data dir {data_dir}; " in listening[0]
    assert by_text[listening[0]] == "INFO"
    failed = [(lv, t) for lv, t in records if "the Ready loop failed" in t]
    assert len(failed) == 1
    level, text = failed[0]
    assert level == "ERROR"
    lines = text.split("\n")
    assert lines[0] == "pgraft.node: node 1: the Ready loop failed; stopping"
    assert lines[1] == "Traceback (most recent call last):"
    # the exception's text holds the data directory's newline too
    assert f"\npgraft.errors.StorageError: syncing the log segment {data_dir}/log/" in text
    assert text.endswith("(EIO)")
    assert ("ERROR", "pgraft.node: node 1 stopping") not in records
    assert records[-1] == ("INFO", "pgraft.node: node 1 stopped")
    assert all(text.split(": ", 1)[0].startswith("pgraft") for _, text in records)
    # the raw lines carry the escapes, one record per line
    raw = res.stderr.split("\n")
    assert any(f"data dir {tmpdir_short}/a\\\\b\\nc; " in line for line in raw)


def test_launcher_format_usage_error_is_a_record() -> None:
    res = _pgraft("serve", "--id", "1", "--address", "127.0.0.1", "--port", "7001",
                  "--data-dir", "/nonexistent/x", "--log-format", "launcher",
                  "--election-timeout", "a\\b")
    assert res.returncode == 2
    assert _records(res.stderr) == [
        ("ERROR", "pgraft.cli: argument --election-timeout: invalid int value: 'a\\\\b' "
                  "(hint: see 'pgraft serve --help')")]


def test_default_log_format_is_unchanged(tmpdir_short: str) -> None:
    res = _pgraft(*_serve_args(os.path.join(tmpdir_short, "d"), free_port()),
                  PGRAFT_FAILPOINTS="log.sync=eio@3")  # @1: the start (process.py)
    assert res.returncode == 1
    lines = res.stderr.splitlines()
    assert any("listening on" in line for line in lines)
    first_lines = [line for line in lines if not line.startswith((" ", "Traceback"))
                   and not line.startswith("pgraft.errors.")]
    assert first_lines and all(HUMAN_LINE.match(line) for line in first_lines), lines


# ------------------------------------------------------------------------ --pg-system-id
def test_pg_system_id_recorded_refused_and_rebound(tmpdir_short: str,
                                                   serve: Callable[..., Served]) -> None:
    data_dir = os.path.join(tmpdir_short, "node1")
    port = free_port()
    # a data directory made without the record (as before it existed)
    s = serve(_serve_args(data_dir, port))
    s.wait_listening()
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait() == 0
    assert not os.path.exists(os.path.join(data_dir, "pg_system_id"))
    # its first start with --pg-system-id records it (upgrade)
    s = serve(_serve_args(data_dir, port, "--pg-system-id", str(SYSID)))
    s.wait_listening()
    with open(os.path.join(data_dir, "pg_system_id")) as f:
        assert f.read() == f"{SYSID}\n"
    assert f"recorded PostgreSQL system identifier {SYSID}" in s.stderr()
    # no rebind while the node runs
    res = _pgraft("storage", "rebind-postgres", "--data-dir", data_dir, "--pg-system-id", "42")
    assert res.returncode == 1
    assert f"is locked by a running node (pid {s.proc.pid})" in res.stderr
    assert "stop the node first" in res.stderr
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait() == 0
    # another server's identifier: refused, exit code 1, both ids and the way out named
    res = _pgraft(*_serve_args(data_dir, port, "--pg-system-id", "42"))
    assert res.returncode == 1
    err = res.stderr
    assert "node 1 cannot start" in err
    assert f"belongs to the PostgreSQL server with system identifier {SYSID}, not to this " \
           "server (42)" in err
    assert "pg_upgrade" in err
    assert f"pgraft storage rebind-postgres --data-dir {data_dir} --pg-system-id 42" in err
    assert "listening on" not in err
    # after pg_upgrade: the operator rebinds, and the node starts for the new identifier
    res = _pgraft("storage", "rebind-postgres", "--data-dir", data_dir, "--pg-system-id", "42")
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{data_dir}: bound to PostgreSQL system identifier 42 (it was " \
                         f"{SYSID})\n"
    s = serve(_serve_args(data_dir, port, "--pg-system-id", "42", "--log-format",
                          "launcher"))
    s.wait_listening()
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait() == 0
    res = _pgraft(*_serve_args(data_dir, port, "--pg-system-id", str(SYSID), "--log-format",
                               "launcher"))
    assert res.returncode == 1
    refusal = [t for lv, t in _records(res.stderr) if lv == "ERROR"]
    assert len(refusal) == 1 and f"system identifier 42, not to this server ({SYSID})" \
        in refusal[0]


def test_a_new_data_directory_is_bound_at_its_first_start(tmpdir_short: str,
                                                          serve: Callable[..., Served]) -> None:
    data_dir = os.path.join(tmpdir_short, "fresh")
    s = serve(_serve_args(data_dir, free_port(), "--pg-system-id", "18446744073709551615"))
    s.wait_listening()
    with open(os.path.join(data_dir, "pg_system_id")) as f:
        assert f.read() == "18446744073709551615\n"
    assert "is bound to PostgreSQL system identifier 18446744073709551615" in s.stderr()
    s.proc.send_signal(signal.SIGINT)
    assert s.wait() == 0


@pytest.mark.parametrize(("value", "why"), [
    ("abc", "is not a decimal number"),
    ("-5", "is not a decimal number"),
    ("12 ", "is not a decimal number"),
    ("0x1f", "is not a decimal number"),
    ("0", "0 is not valid"),
    ("18446744073709551616", "is not an unsigned 64-bit number"),
])
def test_bad_pg_system_id_is_a_usage_error(tmpdir_short: str, value: str, why: str) -> None:
    data_dir = os.path.join(tmpdir_short, "d")
    res = _pgraft(*_serve_args(data_dir, free_port(), "--pg-system-id", value))
    assert res.returncode == 2
    assert res.stderr.startswith("error: argument --pg-system-id: PostgreSQL system "
                                 "identifier ") and why in res.stderr
    assert "see 'pgraft serve --help'" in res.stderr
    assert not os.path.exists(data_dir)
    res = _pgraft("storage", "rebind-postgres", "--data-dir", data_dir, "--pg-system-id", value)
    assert res.returncode == 2
    assert why in res.stderr and "pgraft storage rebind-postgres --help" in res.stderr


def test_rebind_needs_a_data_directory(tmpdir_short: str) -> None:
    res = _pgraft("storage", "rebind-postgres", "--data-dir", tmpdir_short, "--pg-system-id",
                  "5")
    assert res.returncode == 1
    assert f"{tmpdir_short} is not a pgraft data directory" in res.stderr
    res = _pgraft("storage", "rebind-postgres", "--data-dir", tmpdir_short)
    assert res.returncode == 2 and "--pg-system-id" in res.stderr


# --------------------------------------------------------------------------------- SIGQUIT
@pytest.mark.parametrize(("ignored", "log_format"), [(True, "launcher"), (False, "human")],
                         ids=["inherited-SIG_IGN", "default-disposition"])
def test_sigquit_exits_at_once_with_status_2(tmpdir_short: str, serve: Callable[..., Served],
                                             ignored: bool, log_format: str) -> None:
    data_dir = os.path.join(tmpdir_short, "q")
    port = free_port()
    s = serve(_serve_args(data_dir, port, "--log-format", log_format), ignore_sigquit=ignored)
    s.wait_listening()
    wait_until("the node to lead", lambda: "-> leader in term" in s.stderr(), 20, 0.05)
    time.sleep(1.1)  # the last line's timestamp must be the signal's, not the start's
    sent_at = time.time()
    started = time.monotonic()
    s.proc.send_signal(signal.SIGQUIT)
    assert s.wait(10) == 2
    assert time.monotonic() - started < 2.0
    text = s.stderr()
    assert not any("stopping" in line for line in text.splitlines())
    if log_format == "launcher":
        assert _records(text)[-1] == ("INFO", "pgraft.node: node 1: SIGQUIT: exiting at once, "
                                              "without cleanup")
    else:
        last = text.splitlines()[-1]
        assert HUMAN_LINE.match(last) and last.endswith(
            " INFO pgraft.node: node 1: SIGQUIT: exiting at once, without cleanup"), last
        stamp = time.mktime(time.strptime(last[:19], "%Y-%m-%d %H:%M:%S"))
        assert stamp >= int(sent_at) - 1
    # no cleanup: the listener never removed its socket
    assert os.path.exists(os.path.join(data_dir, "node.sock"))
    # and the next start recovers as after a crash
    s = serve(_serve_args(data_dir, port))
    s.wait_listening()
    wait_until("the node to lead", lambda: "-> leader in term" in s.stderr(), 20, 0.05)
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait() == 0

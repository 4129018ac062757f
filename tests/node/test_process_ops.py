"""What the PostgreSQL launcher relies on, on real ``pgraft serve`` processes (the contract
between the launcher, the node and the SQL bridge): ``--log-format launcher`` on stderr."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from pgraft.localcluster import free_port
from pgraft.node.logformat import unescape
from tests.support.cluster import requires_node

pytestmark = [requires_node]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECORD = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL):(.*)$")
HUMAN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) \S+: ")


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
                  PGRAFT_FAILPOINTS="log.sync=eio@2")
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
                  PGRAFT_FAILPOINTS="log.sync=eio@2")
    assert res.returncode == 1
    lines = res.stderr.splitlines()
    assert any("listening on" in line for line in lines)
    first_lines = [line for line in lines if not line.startswith((" ", "Traceback"))
                   and not line.startswith("pgraft.errors.")]
    assert first_lines and all(HUMAN_LINE.match(line) for line in first_lines), lines

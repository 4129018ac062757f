"""The pgraft command against a fake node: output, --json, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any

import pytest
from fake_node import FakeNode

import pgraft
from pgraft import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(pgraft.__file__)))


def pgraft_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def run_module(*args: str, env: dict[str, str] | None = None,
               stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, PYTHONPATH=REPO, **(env or {}))
    return subprocess.run([sys.executable, "-m", "pgraft", *args], capture_output=True,
                          text=True, env=full_env, timeout=60,
                          input=stdin.decode() if stdin is not None else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nodes_table(fake: FakeNode, capsys: Any) -> None:
    code, out, err = pgraft_cli(capsys, "nodes", "--node", fake.address)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split("|")[0].strip() == "node_id"
    assert [c.strip() for c in lines[0].split("|")] == ["node_id", "address", "port", "role",
                                                        "leader"]
    assert set(lines[1]) <= {"-", "+"}
    assert [c.strip() for c in lines[2].split("|")] == ["1", "127.0.0.1", "7001", "voter", "*"]
    assert len(lines) == 5


def test_nodes_json_and_global_options_before_the_command(fake: FakeNode, capsys: Any) -> None:
    code, out, _ = pgraft_cli(capsys, "--node", fake.address, "--json", "nodes")
    assert code == 0
    assert json.loads(out)[0] == {"node_id": 1, "address": "127.0.0.1", "port": 7001,
                                  "role": "voter", "is_leader": True}


def test_node_from_environment(fake: FakeNode, capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("PGRAFT_NODE", fake.address)
    code, out, _ = pgraft_cli(capsys, "leader")
    assert (code, out) == (0, "node 1 at 127.0.0.1:7001\n")
    code, out, _ = pgraft_cli(capsys, "leader", "--json")
    assert json.loads(out) == {"leader_id": 1, "address": "127.0.0.1:7001"}


def test_unix_socket_target(fake: FakeNode, capsys: Any) -> None:
    assert fake.unix_path is not None
    code, out, _ = pgraft_cli(capsys, "leader", "--node", fake.unix_path)
    assert code == 0 and out.startswith("node 1")


def test_write_commands(fake: FakeNode, capsys: Any) -> None:
    node = ["--node", fake.address]
    code, out, _ = pgraft_cli(capsys, "add-node", "4", "127.0.0.1", "7004", *node)
    assert code == 0 and "node 4 (127.0.0.1:7004) added" in out
    code, out, _ = pgraft_cli(capsys, "append", "hello", *node)
    assert (code, out) == (0, "appended 5 bytes at index 1\n")
    code, out, _ = pgraft_cli(capsys, "append", "again", "--json", *node)
    assert (code, json.loads(out)) == (0, 2)
    code, out, _ = pgraft_cli(capsys, "entry", "1", *node)
    assert code == 0 and "'hello'" in out
    code, out, _ = pgraft_cli(capsys, "entry", "1", "--json", *node)
    assert json.loads(out)["data"] == b"hello".hex()
    code, out, err = pgraft_cli(capsys, "entry", "9", *node)
    assert code == 1 and err.startswith("error: no entry at index 9")
    code, out, _ = pgraft_cli(capsys, "remove-node", "4", *node)
    assert (code, out) == (0, "node 4 removed\n")
    code, out, _ = pgraft_cli(capsys, "transfer-leader", "2", *node)
    assert (code, out) == (0, "node 2 is now the leader\n")
    assert [op for op, _ in fake.requests] == ["add_node", "append", "append", "get_entry",
                                               "get_entry", "get_entry", "remove_node",
                                               "transfer_leadership"]


def test_kv_commands(fake: FakeNode, capsys: Any) -> None:
    node = ["--node", fake.address]
    assert pgraft_cli(capsys, "kv", "put", "b", "2", *node)[0] == 0
    assert pgraft_cli(capsys, "kv", "put", "a", "1", *node)[0] == 0
    assert pgraft_cli(capsys, "kv", "get", "a", *node)[:2] == (0, "1\n")
    assert pgraft_cli(capsys, "kv", "list", *node)[:2] == (0, "a\nb\n")
    code, out, _ = pgraft_cli(capsys, "kv", "list", "--json", *node)
    assert json.loads(out) == ["a", "b"]
    assert pgraft_cli(capsys, "kv", "delete", "a", *node)[:2] == (0, "deleted a\n")
    code, out, err = pgraft_cli(capsys, "kv", "get", "a", *node)
    assert code == 1 and out == ""
    assert err == ("error: key 'a' does not exist (hint: list the keys with 'pgraft kv "
                   "list')\n")
    code, out, err = pgraft_cli(capsys, "kv", "get", "a", "--json", *node)
    assert code == 1 and json.loads(out) is None


def test_status_output(fake: FakeNode, capsys: Any) -> None:
    code, out, _ = pgraft_cli(capsys, "status", "--node", fake.address)
    assert code == 0
    assert "role" in out and "leader" in out and "replication progress" in out
    assert "metrics:" in out
    code, out, _ = pgraft_cli(capsys, "status", "--json", "--node", fake.address)
    assert json.loads(out)["progress"]["2"]["state"] == "replicate"


def test_not_leader_is_one_line_naming_the_leader(follower: FakeNode, capsys: Any) -> None:
    code, out, err = pgraft_cli(capsys, "add-node", "4", "127.0.0.1", "7004", "--node",
                                follower.address)
    assert code == 1 and out == ""
    assert err == ("error: Cannot add node - this node is not the leader (hint: the leader "
                   "is node 2 at 127.0.0.1:7002; run the command there)\n")


@pytest.mark.parametrize("args, fragment", [
    ([], "no command given"),
    (["frobnicate"], "invalid choice"),
    (["add-node", "x", "127.0.0.1", "7004"], "ID must be an integer"),
    (["add-node", "4", "127.0.0.1"], "required"),
    (["add-node", "0", "127.0.0.1", "7004"], "node_id must be at least 1"),
    (["add-node", "4", "bad_host", "7004"], "neither a valid host name"),
    (["add-node", "4", "127.0.0.1", "99999"], "out of range"),
    (["kv"], "required"),
    (["nodes", "--timeout", "soon"], "timeout must be a number"),
    (["nodes", "--timeout", "0"], "timeout must be a positive"),
    (["nodes", "--node", "nonsense"], "cannot parse node target"),
    (["postgres", "upgrade"], "unknown postgres command"),
])
def test_usage_errors_exit_2(args: list[str], fragment: str, capsys: Any) -> None:
    code, out, err = pgraft_cli(capsys, *args)
    assert code == 2, err
    assert out == ""
    assert err.startswith("error: ") and fragment in err
    assert err.count("\n") == 1


def test_unreachable_node_exits_3(capsys: Any) -> None:
    code, out, err = pgraft_cli(capsys, "nodes", "--node", f"127.0.0.1:{free_port()}")
    assert code == 3 and out == ""
    assert err.startswith("error: cannot connect") and "(hint: " in err
    assert err.count("\n") == 1


def test_help_exits_0(capsys: Any) -> None:
    code, out, _ = pgraft_cli(capsys, "--help")
    assert code == 0 and "add-node" in out and "transfer-leader" in out
    code, out, _ = pgraft_cli(capsys, "kv", "put", "--help")
    assert code == 0 and "KEY" in out


def test_python_dash_m_runs_and_never_prints_a_traceback(fake: FakeNode) -> None:
    proc = run_module("nodes", "--node", fake.address)
    assert proc.returncode == 0, proc.stderr
    assert "127.0.0.1" in proc.stdout
    proc = run_module("append", "-", env={"PGRAFT_NODE": fake.address}, stdin=b"from stdin")
    assert proc.returncode == 0 and "appended 10 bytes" in proc.stdout
    proc = run_module("nodes", "--node", f"127.0.0.1:{free_port()}")
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    proc = run_module("add-node", "four")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_postgres_install_delegates_or_explains(capsys: Any, monkeypatch: Any) -> None:
    import types

    seen: list[list[str]] = []
    fake_installer = types.ModuleType("pgraft.pg.install")
    fake_installer.main = lambda argv: seen.append(argv) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pgraft.pg.install", fake_installer)
    code, _, _ = pgraft_cli(capsys, "postgres", "install", "--pg-config", "/x/pg_config")
    assert code == 0 and seen == [["--pg-config", "/x/pg_config"]]
    monkeypatch.setitem(sys.modules, "pgraft.pg.install", None)
    code, out, err = pgraft_cli(capsys, "postgres", "install")
    assert code == 1
    assert err.startswith("error: the PostgreSQL installer") or "pg_install" in err


def test_broken_pipe_is_quiet(fake: FakeNode) -> None:
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(f"'{sys.executable}' -m pgraft nodes --node {fake.address} | head -c1",
                          shell=True, capture_output=True, text=True, env=env, timeout=60)
    assert "Traceback" not in proc.stderr


def test_serve_delegates_to_the_node_runtime(capsys: Any, monkeypatch: Any) -> None:
    import types

    calls: list[Any] = []
    node = types.ModuleType("pgraft.node")

    def add_serve_arguments(parser: Any) -> None:
        parser.add_argument("--id", type=int, required=True)

    def config_from_args(ns: Any) -> dict[str, int]:
        calls.append(("config", ns.id))
        return {"id": ns.id}

    def run(config: dict[str, int]) -> int:
        calls.append(("run", config))
        return 0

    node.add_serve_arguments = add_serve_arguments  # type: ignore[attr-defined]
    node.config_from_args = config_from_args  # type: ignore[attr-defined]
    node.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pgraft.node", node)
    assert pgraft_cli(capsys, "serve", "--id", "3")[0] == 0
    assert calls == [("config", 3), ("run", {"id": 3})]
    code, _, err = pgraft_cli(capsys, "serve")
    assert code == 2 and err.startswith("error: ") and "--id" in err

    def failing_run(config: dict[str, int]) -> int:
        from pgraft.errors import StorageError

        raise StorageError("data directory /x is locked by a running node (pid 42)")

    node.run = failing_run  # type: ignore[attr-defined]
    code, _, err = pgraft_cli(capsys, "serve", "--id", "3")
    assert code == 1 and err.startswith("error: data directory /x is locked")
